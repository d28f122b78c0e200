defmodule Binscope.Remote do
  @moduledoc """
  Runs Binscope's collector (`:binscope_collector`, OTP only) on the local node, on a remote node
  or on many nodes at once, with a hard timeout on every call.

  A remote node does not need Binscope installed: when it lacks the collector, or has a different
  version, the collector is loaded onto it (`:code.load_binary/3` over `:erpc`): all of its modules
  (`:binscope_collector.modules/0`) when any is missing there or differs (checked in two calls
  whatever their number). A target on the same OTP release as this node, or a newer one, gets this
  node's object code. Object code from a newer compiler does not load on an older release (OTP 29's
  is refused by OTP 25), so a target on an older release compiles the collector's abstract code with
  its own compiler (OTP's `compiler` application, loaded there for it; a few hundred milliseconds of
  one scheduler, once per collector version). A target without the compiler application gets
  `{:error, {:collector_load_failed, {:no_compiler, release}}}`. Nothing else is loaded or started
  there. The collector gathers compact data on the target (process_info lists, forced GCs when a
  leak mode asks for them); attribution runs here, in Rust.

  Security: remote inspection goes only through distributed Erlang, so it needs the node's cookie,
  like any `:erpc` call. A remote scan sees what `process_info/2` shows: pids, registered names,
  initial calls, current functions, memory figures and binary addresses, sizes and reference
  counts, and process labels (OTP 27+). It never reads message contents, process dictionaries
  (beyond proc_lib's `$initial_call` and the label `process_info/2` returns), ETS contents or
  binary data.

  Failures come back per node as `{:error, reason}`: `:not_distributed` (this node is not alive),
  `:noconnection` (down, unreachable or wrong cookie), `:timeout`, `{:collector_load_failed, _}`
  (`:no_compiler`, `{:compile, errors}`, or the target's `:code.load_binary/3` error), or `{:remote_error, _}`. No call waits longer than its timeout plus `margin_ms/0`.

  ## Deadlines

  A public call's `timeout:` becomes one deadline (`deadline/1`) for all of its steps:
  connecting, loading the collector, every collector call (each is told the time left as
  `budget_ms` and gives up on its own when it runs out, on the local node and on a remote one
  alike: its scan reads the clock every 256 processes, its GC round waits for each collection
  with the time left), and the attribution and record building here. Whatever runs out of
  time returns `{:error, :timeout}`; nothing it started is left running: scan workers and GC
  helpers are killed and their messages dropped, a collection already asked for completes in
  its own process, the caller's heap reservation is put back.
  """

  @collector :binscope_collector
  @timeout {:binscope_collector, :timeout}
  # How far past its deadline a call may return: the steps that cannot be interrupted are one
  # piece of a scan (256 process_info calls), one attribution NIF call and one piece of record
  # building (measured in the README, Reliability), plus the wait for a scheduler on a busy
  # machine: at 100k processes an idle machine overran by up to 68 ms, one at load average 10
  # by up to 126 ms. `nodes:` kills a node's call at the deadline plus this much.
  @margin_ms 250

  @typedoc "A per-node outcome."
  @type outcome :: {:ok, term()} | {:error, term()}

  @typedoc "A deadline: `System.monotonic_time(:millisecond)` on the calling node."
  @type deadline :: integer()

  @doc "The deadline `timeout` ms from now."
  @spec deadline(non_neg_integer()) :: deadline()
  def deadline(timeout), do: System.monotonic_time(:millisecond) + timeout

  @doc "Milliseconds left before `deadline` (0 once it has passed)."
  @spec left(deadline()) :: non_neg_integer()
  def left(deadline), do: max(deadline - System.monotonic_time(:millisecond), 0)

  @doc "How far past its deadline a call may return, in ms (see Deadlines)."
  @spec margin_ms() :: pos_integer()
  def margin_ms, do: @margin_ms

  @doc """
  Throws the collector's timeout when `deadline` has passed (`bounded/1` turns it into
  `{:error, :timeout}`).
  """
  @spec check!(deadline()) :: :ok
  def check!(deadline) do
    if System.monotonic_time(:millisecond) >= deadline, do: throw(@timeout), else: :ok
  end

  @doc "Runs `fun`, turning a timeout thrown by `check!/1` or the collector into `{:error, :timeout}`."
  @spec bounded((... -> result)) :: result | {:error, :timeout} when result: term()
  def bounded(fun) do
    fun.()
  catch
    :throw, @timeout -> {:error, :timeout}
  end

  @doc """
  Calls `:binscope_collector.fun(args...)` on `node` before `deadline` (see Deadlines).
  """
  @spec call(node(), atom(), list(), deadline()) :: outcome()
  def call(node, fun, args, deadline) when node == node() do
    # In the caller: handing a whole-node result from another process to the caller would be
    # one large, unpreemptible copy. The collector bounds itself (budget_ms).
    bounded(fn ->
      check!(deadline)
      {:ok, apply(@collector, fun, budgeted(fun, args, left(deadline)))}
    end)
  rescue
    e -> {:error, {:collector_failed, Exception.message(e)}}
  end

  def call(node, fun, args, deadline) do
    if Node.alive?() do
      # Connecting (and loading the collector) runs in a separate process bounded by the
      # deadline: connection set-up can block longer than any erpc timeout. The scan itself is
      # then an erpc call from the caller, so its (large) result arrives straight in the
      # caller's mailbox instead of being copied once more from a helper process. The collector
      # gives up on its own at the same deadline, so it does not run on after erpc's timeout.
      with :ok <- await(start(fn -> ensure_collector(node, left(deadline)) end), left(deadline)) do
        case left(deadline) do
          0 -> {:error, :timeout}
          ms -> erpc(node, @collector, fun, budgeted(fun, args, ms), ms)
        end
      end
    else
      {:error, :not_distributed}
    end
  end

  # The collector calls that take a budget_ms (scans and GC rounds).
  defp budgeted(:snapshot, [opts], ms), do: [Map.put(opts, :budget_ms, ms)]
  defp budgeted(fun, [pids], ms) when fun in [:details, :gc_round], do: [pids, %{budget_ms: ms}]
  defp budgeted(:gc_round, [pids, opts], ms), do: [pids, Map.put(opts, :budget_ms, ms)]
  defp budgeted(_fun, args, _ms), do: args

  @doc """
  Runs `fun.(node)` for every node in parallel, each bounded by `deadline` (`fun` is expected to
  honour it; a call still running `margin_ms/0` after it is killed and reported as
  `{:error, :timeout}`). Returns `%{node => outcome}`.
  """
  @spec each([node()], deadline(), (node() -> outcome())) :: %{node() => outcome()}
  def each(nodes, deadline, fun) do
    nodes
    |> Enum.uniq()
    |> Enum.map(fn n -> {n, start(fn -> fun.(n) end)} end)
    |> Map.new(fn {n, ref} -> {n, await(ref, left(deadline) + @margin_ms)} end)
  end

  @doc """
  Makes sure `node` runs the same collector as this node; loads it there when not.

  How it is loaded depends on the target's OTP release (see the module doc): this node's object
  code when the target runs the same release or a newer one (compiled on the target if the newer
  one refuses it), the collector's abstract code compiled by the target's own compiler when the
  target runs an older release. A collector compiled on the target carries this node's
  collector's MD5 in its `binscope_source_md5` attribute, so the next call finds it current.
  """
  @spec ensure_collector(node(), timeout()) :: :ok | {:error, term()}
  def ensure_collector(node, timeout) do
    # Two calls however many modules: which are loaded there, then their module_info (external
    # funs of BIFs, which need no module of ours on the target).
    mods = @collector.modules()

    with {:ok, loaded} <- erpc(node, :lists, :map, [&:erlang.module_loaded/1, mods], timeout),
         present = for({m, true} <- Enum.zip(mods, loaded), do: m),
         {:ok, infos} <- module_infos(node, present, timeout) do
      current = for {m, info} <- Enum.zip(present, infos), current?(info, m), do: m

      if current == mods, do: :ok, else: load(node, timeout)
    end
  end

  defp module_infos(_node, [], _timeout), do: {:ok, []}

  defp module_infos(node, mods, timeout),
    do: erpc(node, :lists, :map, [&:erlang.get_module_info/1, mods], timeout)

  defp current?(info, mod) do
    local = mod.module_info(:md5)

    info[:md5] == local or
      Keyword.get(info[:attributes] || [], :binscope_source_md5) == [local]
  end

  defp load(node, timeout) do
    with {:ok, release} <- erpc(node, :erlang, :system_info, [:otp_release], timeout) do
      case plan(:erlang.system_info(:otp_release), release) do
        :object_code ->
          load(node, :object_code, timeout)

        :object_code_then_compile ->
          with {:error, {:collector_load_failed, _}} <- load(node, :object_code, timeout),
               do: load(node, :compile, timeout)

        :compile ->
          load(node, :compile, timeout)
      end
    end
  end

  @doc false
  # How the collector goes onto a target running OTP `remote` from a node running `local`
  # (`:erlang.system_info(:otp_release)` of each). Object code from a newer compiler does not
  # load on an older release (OTP 29's fails on OTP 25 with `{:features_not_allowed,
  # [:maybe_expr]}`, and still with `:badfile` when compiled without that feature); a newer
  # release loads older object code within its support window, and is compiled for when not.
  @spec plan(charlist(), charlist()) :: :object_code | :object_code_then_compile | :compile
  def plan(local, remote) do
    case {release(local), release(remote)} do
      {l, l} when is_integer(l) -> :object_code
      {l, r} when is_integer(l) and is_integer(r) and r > l -> :object_code_then_compile
      _ -> :compile
    end
  end

  defp release(r) do
    case Integer.parse(to_string(r)) do
      {n, ""} -> n
      _ -> nil
    end
  end

  @doc false
  # Loads every module of the collector (`:binscope_collector.modules/0`, its entry module last)
  # onto `node` by `how` (`:object_code` or `:compile`), replacing those there. Public for the
  # tests of each way.
  @spec load(node(), :object_code | :compile, timeout()) :: :ok | {:error, term()}
  def load(node, :object_code, timeout) do
    each_module(fn mod ->
      case :code.get_object_code(mod) do
        {^mod, bin, file} -> load_binary(node, mod, file, bin, timeout)
        :error -> {:error, {:collector_load_failed, :no_object_code}}
      end
    end)
  end

  def load(node, :compile, timeout) do
    with :ok <- compiler_present(node, timeout) do
      each_module(fn mod ->
        with {:ok, forms} <- abstract_code(mod),
             {:ok, ^mod, bin} <- compile_on(node, forms, timeout) do
          load_binary(node, mod, ~c"#{mod}.erl", bin, timeout)
        end
      end)
    end
  end

  # The first error stops the loading.
  defp each_module(fun) do
    Enum.reduce_while(@collector.modules(), :ok, fn mod, :ok ->
      case fun.(mod) do
        :ok -> {:cont, :ok}
        error -> {:halt, error}
      end
    end)
  end

  defp load_binary(node, mod, file, bin, timeout) do
    _ = erpc(node, :code, :soft_purge, [mod], timeout)

    case erpc(node, :code, :load_binary, [mod, file, bin], timeout) do
      {:ok, {:module, ^mod}} -> :ok
      {:ok, {:error, reason}} -> {:error, {:collector_load_failed, reason}}
      error -> error
    end
  end

  # A collector module's abstract code (from its debug_info), tagged with this node's MD5 of
  # it. The target's own parser never sees source text: the forms are plain terms its compiler
  # reads (the records of binscope_collector.hrl included), and the collector uses nothing newer
  # than OTP 25's language.
  defp abstract_code(mod) do
    with {^mod, bin, _file} <- :code.get_object_code(mod),
         {:ok, {^mod, [debug_info: {:debug_info_v1, backend, meta}]}} <-
           :beam_lib.chunks(bin, [:debug_info]),
         {:ok, forms} <- backend.debug_info(:erlang_v1, mod, meta, []) do
      tag = {:attribute, 1, :binscope_source_md5, mod.module_info(:md5)}

      {:ok,
       Enum.flat_map(forms, fn
         {:attribute, _, :module, _} = m -> [m, tag]
         f -> [f]
       end)}
    else
      _ -> {:error, {:collector_load_failed, :no_abstract_code}}
    end
  end

  defp compiler_present(node, timeout) do
    case erpc(node, :code, :ensure_loaded, [:compile], timeout) do
      {:ok, {:module, :compile}} ->
        :ok

      {:ok, {:error, _}} ->
        with {:ok, release} <- erpc(node, :erlang, :system_info, [:otp_release], timeout),
             do: {:error, {:collector_load_failed, {:no_compiler, List.to_string(release)}}}

      error ->
        error
    end
  end

  defp compile_on(node, forms, timeout) do
    case erpc(node, :compile, :forms, [forms, [:binary, :return_errors]], timeout) do
      {:ok, {:ok, mod, bin}} -> {:ok, mod, bin}
      {:ok, {:ok, mod, bin, _warnings}} -> {:ok, mod, bin}
      {:ok, {:error, errors, _warnings}} -> {:error, {:collector_load_failed, {:compile, errors}}}
      {:ok, :error} -> {:error, {:collector_load_failed, {:compile, :error}}}
      error -> error
    end
  end

  defp erpc(node, m, f, a, timeout) do
    {:ok, :erpc.call(node, m, f, a, timeout)}
  catch
    :error, {:erpc, :noconnection} -> {:error, :noconnection}
    :error, {:erpc, :timeout} -> {:error, :timeout}
    :error, {:erpc, reason} -> {:error, {:remote_error, reason}}
    :error, {:exception, reason, _stack} -> {:error, {:remote_error, reason}}
    :exit, {:exception, reason, _stack} -> {:error, {:remote_error, reason}}
    :exit, {:signal, reason} -> {:error, {:remote_error, reason}}
    :throw, @timeout -> {:error, :timeout}
    :throw, value -> {:error, {:remote_error, {:throw, value}}}
  end

  defp start(fun) do
    caller = self()
    tag = make_ref()

    {pid, mref} =
      spawn_monitor(fn ->
        result =
          try do
            bounded(fun)
          rescue
            e -> {:error, {:collector_failed, Exception.message(e)}}
          catch
            kind, reason -> {:error, {:collector_failed, {kind, reason}}}
          end

        send(caller, {tag, result})
      end)

    {tag, pid, mref}
  end

  defp await({tag, pid, mref}, timeout) do
    receive do
      {^tag, result} ->
        Process.demonitor(mref, [:flush])
        result

      {:DOWN, ^mref, :process, ^pid, reason} ->
        {:error, {:collector_failed, reason}}
    after
      timeout ->
        # Gone for sure (its DOWN comes after every message it sent), then nothing of it is left
        # in the mailbox.
        Process.exit(pid, :kill)

        receive do
          {:DOWN, ^mref, :process, ^pid, _} -> :ok
        end

        receive do
          {^tag, _} -> :ok
        after
          0 -> :ok
        end

        {:error, :timeout}
    end
  end
end
