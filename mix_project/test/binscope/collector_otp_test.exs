defmodule Binscope.CollectorOtpTest do
  # What the collector takes from newer OTPs, checked on whichever OTP runs the suite: process
  # labels (OTP 27+, nil before), the processes iterator (OTP 28+), garbage_collection lists read
  # by key, and the two ways the collector goes onto a remote node.
  use Binscope.StoreCase, async: false

  require Binscope.Collector, as: Collector

  alias Binscope.{Accounting, Cluster, Remote}
  alias Binscope.LeakScenario, as: S

  @labels function_exported?(:proc_lib, :set_label, 1)
  @iterator function_exported?(:erlang, :processes_iterator, 0)

  defp labelled(label) do
    me = self()

    pid =
      spawn(fn ->
        if @labels, do: apply(:proc_lib, :set_label, [label])
        send(me, {:labelled, self()})

        receive do
          :stop -> :ok
        end
      end)

    assert_receive {:labelled, ^pid}
    pid
  end

  describe "process labels" do
    test "are part of every record, nil when unset (and everywhere before OTP 27)" do
      pid = labelled({:binscope_worker, 7})
      other = spawn(fn -> receive(do: (:stop -> :ok)) end)
      expected = if @labels, do: {:binscope_worker, 7}, else: nil

      for detail <- [:basic, :full] do
        {:ok, recs} = Binscope.processes(pids: [pid, other], detail: detail)
        assert [%{pid: ^pid, label: ^expected}, %{pid: ^other, label: nil}] = recs, "#{detail}"
      end

      # Whole-node scans too (one check per scan of which items the VM has).
      for detail <- [:basic, :full] do
        {:ok, all} = Binscope.processes(detail: detail)
        assert Enum.find(all, &(&1.pid == pid)).label == expected
      end

      {:ok, top} = Binscope.top(5000, by: :memory, detail: :basic)
      assert Enum.find(top, &(&1.pid == pid)).label == expected
      S.stop_all([pid, other])
    end

    test "name a process in the command line's tables, after the registered name" do
      pid = labelled(:binscope_label_shown)
      {:ok, [r]} = Binscope.processes(pids: [pid])
      table = IO.iodata_to_binary(Binscope.Render.render(:top, [r], :table))

      if @labels do
        assert table =~ ":binscope_label_shown"
      else
        refute table =~ "binscope_label_shown"
      end

      S.stop_all([pid])
    end

    test "of any term render as JSON (text where JSON has no form for them)" do
      odd = {:w, <<255>>, [:a | :b], <<1::3>>, "ok"}
      json = Binscope.Render.JSON.encode(%{label: odd})

      assert json ==
               "{\"label\":[\"w\",\"<<255>>\",\"[:a | :b]\",\"<<1::size(3)>>\",\"ok\"]}"

      pid = labelled(odd)
      {:ok, [r]} = Binscope.processes(pids: [pid])
      out = IO.iodata_to_binary(Binscope.Render.render(:top, [r], :json))
      if @labels, do: assert(out =~ "[:a | :b]"), else: assert(out =~ ~s("label": null))
      S.stop_all([pid])
    end

    test "come with leak reports" do
      me = self()

      pid =
        spawn(fn ->
          if @labels, do: apply(:proc_lib, :set_label, [:binscope_leaky])
          bins = for i <- 1..4, do: :binary.copy(<<i>>, 1_048_576)
          send(me, {:ready, self(), length(bins)})
          receive(do: (:stop -> :ok))
        end)

      assert_receive {:ready, ^pid, 4}
      {:ok, found} = Binscope.leaks(mode: :dry_run, limit: 50)
      r = Enum.find(found, &(&1.pid == pid))
      assert r, "the holder of 4 MiB is in the dry run's top 50"
      assert r.label == if(@labels, do: :binscope_leaky, else: nil)
      S.stop_all([pid])
    end
  end

  describe "garbage_collection lists" do
    @gc [
      max_heap_size: %{size: 0},
      min_bin_vheap_size: 46_422,
      min_heap_size: 233,
      fullsweep_after: 10,
      minor_gcs: 3
    ]
    @gci [
      old_heap_block_size: 1,
      heap_block_size: 2,
      mbuf_size: 3,
      recent_size: 4,
      stack_size: 5,
      old_heap_size: 6,
      heap_size: 7,
      bin_vheap_size: 8,
      bin_vheap_block_size: 9,
      bin_old_vheap_size: 10,
      bin_old_vheap_block_size: 11
    ]
    @figures {{3, 10}, {1, 2, 3, 5, 6, 7, 8, 10}}

    defp fields(gc, gci), do: :binscope_collector.gc_fields(gc, gci)

    test "ERTS's own lists read the same" do
      {:garbage_collection, gc} = Process.info(self(), :garbage_collection)
      {:garbage_collection_info, gci} = Process.info(self(), :garbage_collection_info)
      {{minor, fullsweep}, {ob, b, mb, s, oh, h, v, ov}} = fields(gc, gci)
      assert {minor, fullsweep} == {gc[:minor_gcs], gc[:fullsweep_after]}

      assert [ob, b, mb, s, oh, h, v, ov] ==
               Enum.map(
                 ~w(old_heap_block_size heap_block_size
                 mbuf_size stack_size old_heap_size heap_size bin_vheap_size
                 bin_old_vheap_size)a,
                 &gci[&1]
               )
    end

    test "a key added at the end, the front or the middle changes no figure" do
      assert fields(@gc ++ [new_gc_key: 99], @gci ++ [new_key: 99]) == @figures
      assert fields([new_gc_key: 99] ++ @gc, [new_key: 99] ++ @gci) == @figures

      {a, b} = Enum.split(@gci, 5)
      {c, d} = Enum.split(@gc, 4)
      assert fields(c ++ [new_gc_key: 99] ++ d, a ++ [new_key: 99] ++ b) == @figures
    end

    test "keys in another order are read by key" do
      assert fields(Enum.reverse(@gc), Enum.reverse(@gci)) == @figures
      # Same keys, values swapped: a positional read would take the wrong ones.
      swapped = @gci |> Keyword.put(:heap_size, 6) |> Keyword.put(:old_heap_size, 7)
      swapped = Enum.sort_by(swapped, fn {k, _} -> k end)
      assert {_, {_, _, _, _, 7, 6, _, _}} = fields(@gc, swapped)
    end

    test "a missing key is unknown (undefined, nil in the record), never 0" do
      gci = Keyword.delete(@gci, :bin_vheap_size) |> Keyword.delete(:mbuf_size)
      gc = Keyword.delete(@gc, :minor_gcs)
      assert {{:undefined, 10}, {1, 2, :undefined, 5, 6, 7, :undefined, 10}} = fields(gc, gci)

      # The Elixir side: every figure that needs a missing one is nil.
      pid = self()

      raw = %{
        node: node(),
        time_ms: 0,
        store: false,
        word_size: 8,
        workers: 1,
        procs: [
          Collector.process(
            pid: pid,
            binaries: [],
            listed_bytes: 0,
            registered_name: :undefined,
            label: :undefined,
            initial_call: {:m, :f, 0},
            current_function: {:m, :f, 0},
            memory: 100,
            total_heap_size: :undefined,
            heap_size: 7,
            stack_size: 5,
            message_queue_len: 0,
            reductions: 1,
            minor_gcs: :undefined,
            fullsweep_after: 10,
            bin_vheap_size: :undefined,
            bin_old_vheap_size: 10,
            old_heap_size: 6
          )
        ]
      }

      [r] = Accounting.attribute(raw, 0).processes
      assert r.total_heap_size == nil and r.bin_vheap_size == nil and r.minor_gcs == nil
      assert r.native_estimated_bytes == nil and r.native_bytes == nil
      assert r.heap_size == 56 and r.stack_size == 40 and r.bin_old_vheap_size == 80
      assert r.fullsweep_after == 10 and r.old_heap_size == 48
    end
  end

  describe "whole-node scans" do
    # A scan that times out stops its workers; a worker may have sent its last word (a 3-tuple
    # with the time of its first samples) just before: nothing of it may stay in the caller's
    # mailbox (seen on OTP 29: one message left after a timed-out leaks call).
    test "a stopped worker leaves none of its messages behind" do
      me = self()
      tag = make_ref()

      {pid, mref} =
        spawn_monitor(fn ->
          send(me, {tag, []})
          send(me, {tag, :done, 0})
          send(me, :sent)
          Process.sleep(:infinity)
        end)

      assert_receive :sent
      :ok = :binscope_collector.stop_worker({tag, pid, mref, []})
      refute_received {^tag, _}
      refute_received {^tag, _, _}
      refute Process.alive?(pid)
    end

    # Call tracing of erlang:processes/0 in the scanning process shows which way it went.
    defp calls_processes?(fun) do
      me = self()
      tracer = spawn(fn -> trace_loop(me, 0) end)
      :erlang.trace_pattern({:erlang, :processes, 0}, true, [:global])
      :erlang.trace(me, true, [:call, {:tracer, tracer}])

      try do
        fun.()
      after
        :erlang.trace(me, false, [:call])
        :erlang.trace_pattern({:erlang, :processes, 0}, false, [:global])
      end

      send(tracer, {:count, me})
      assert_receive {:calls, n}
      n > 0
    end

    defp trace_loop(me, n) do
      receive do
        {:trace, ^me, :call, {:erlang, :processes, []}} -> trace_loop(me, n + 1)
        {:count, from} -> send(from, {:calls, n})
        _ -> trace_loop(me, n)
      end
    end

    test "use the processes iterator where the VM has one (OTP 28+), one scanner or several" do
      pids = for _ <- 1..12_500, do: spawn(fn -> receive(do: (:stop -> :ok)) end)

      try do
        # erlang:processes/0 builds the whole list in one BIF call (at 1M processes on OTP 29 it
        # held its scheduler up to 61 ms), so no whole-node scan calls it where there is an
        # iterator; a presampling scan (window_ms) still needs the list.
        for workers <- [1, 3] do
          scan = fn -> :binscope_collector.snapshot(%{detail: :basic, workers: workers}) end
          assert calls_processes?(scan) == not @iterator, "workers: #{workers}"
        end

        window = fn ->
          :binscope_collector.snapshot(%{
            detail: :basic,
            workers: 1,
            reductions: true,
            window_ms: 10
          })
        end

        assert calls_processes?(window)
      after
        S.stop_all(pids)
      end
    end

    test "find every process, with one scanner or several" do
      pids = for _ <- 1..12_500, do: spawn(fn -> receive(do: (:stop -> :ok)) end)

      try do
        for workers <- [1, 3] do
          before = MapSet.new(:erlang.processes())
          snap = :binscope_collector.snapshot(%{detail: :basic, workers: workers})
          found = Enum.map(snap.procs, &Collector.basic(&1, :pid))
          assert length(found) == length(Enum.uniq(found)), "no process twice"
          # Processes that lived through the scan are all in it (others may come and go).
          after_ = MapSet.new(:erlang.processes())
          assert MapSet.subset?(MapSet.intersection(before, after_), MapSet.new(found))
          assert snap.workers == workers
        end
      after
        S.stop_all(pids)
      end
    end
  end

  describe "loading the collector onto another node" do
    setup do
      Cluster.distribute!()
      {peer, node} = Cluster.start_peer()

      on_exit(fn -> Cluster.stop_peer(peer) end)

      %{node: node}
    end

    test "the plan by release: object code for the same or newer, compile for older" do
      assert Remote.plan(~c"25", ~c"25") == :object_code
      assert Remote.plan(~c"25", ~c"29") == :object_code_then_compile
      assert Remote.plan(~c"29", ~c"25") == :compile
      assert Remote.plan(~c"29", ~c"27") == :compile
      assert Remote.plan(~c"27", ~c"R16B") == :compile
    end

    test "compiled on the target from the abstract code: works, and is not reloaded", c do
      assert :ok = Remote.load(c.node, :compile, 30_000)
      local = :binscope_collector.module_info(:md5)
      there = :erpc.call(c.node, :binscope_collector, :module_info, [:md5])
      # The target's compiler made it (here the same compiler, but with the source tag).
      refute there == local
      assert :ok = Remote.ensure_collector(c.node, 30_000)
      assert :erpc.call(c.node, :binscope_collector, :module_info, [:md5]) == there

      {:ok, procs} = Binscope.processes(node: c.node)
      assert Enum.any?(procs, &(&1.registered_name == :code_server))
      {:ok, m} = Binscope.memory(node: c.node)
      assert m.node == c.node
    end

    test "a target without the compiler application gets a clear error, not a crash", c do
      refute :erpc.call(c.node, :code, :is_loaded, [:compile])
      true = :erpc.call(c.node, :code, :del_path, [:compiler])
      release = List.to_string(:erlang.system_info(:otp_release))

      assert {:error, {:collector_load_failed, {:no_compiler, ^release}}} =
               Remote.load(c.node, :compile, 30_000)

      # The same release still gets the object code.
      assert {:ok, %{node: _}} = Binscope.memory(node: c.node)
    end
  end
end
