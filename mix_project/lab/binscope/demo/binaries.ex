defmodule Binscope.Demo.Binaries do
  @moduledoc """
  Where a binary lives depends on its size: up to 64 bytes on the process heap (a heap binary,
  copied whenever it is sent), from 65 bytes off-heap (a refc binary: the process heap holds
  only a small reference pointing at shared, reference-counted bytes: a ProcBin up to OTP 26,
  a BinRef from OTP 27, which reworked bitstrings; the demo measures its size on the running VM).

  Part 1 makes `count` binaries of 64 bytes in one process and `count` of 65 bytes in another,
  and reads where each is counted: the term's size on the process heap  (`:erts_debug.flat_size/1`),
  `process_info(pid, :binary)` and `:erlang.memory(:binary)`.

  Part 2 sends one large binary to `receivers` processes: `:erlang.memory(:binary)` grows by one
  copy, not by `receivers` copies, and each receiver holds a ProcBin (BinRef) of a few words. The same
  fan-out of a 64-byte binary copies it into every receiver's heap. Summed over the receivers,
  `process_info(:binary)` counts the shared binary once per holder; `Binscope.processes/1`'s
  `binary_pss` splits it among its holders, so the sum stays near one copy.
  """
  @behaviour Binscope.Demo

  import Binscope.Demo.Kit, only: [b: 1]
  alias Binscope.Demo.Kit
  alias Binscope.Render.Table

  @impl true
  def name, do: :binaries

  @impl true
  def title,
    do: "64-byte vs 65-byte binaries: heap vs off-heap; sending a large one copies nothing"

  @impl true
  def run(opts \\ []) do
    scale = Keyword.get(opts, :scale, 1.0)
    count = max(round(20_000 * scale), 100)
    receivers = max(round(1_000 * scale), 10)
    big = Keyword.get(opts, :big_size, 4 * 1024 * 1024)

    sampler =
      Kit.sampler(fn ->
        %{binary: :erlang.memory(:binary), processes: :erlang.memory(:processes_used)}
      end)

    Kit.progress(opts, "making #{count} binaries of 64 and of 65 bytes")
    small = holder_of(count, 64)
    Kit.event(sampler, "#{count} x 64 B made")
    large = holder_of(count, 65)
    Kit.event(sampler, "#{count} x 65 B made")

    Kit.progress(opts, "sending a #{b(big)} binary to #{receivers} processes")
    fan_big = fan_out(receivers, big, sampler, "#{b(big)} sent to #{receivers}")
    fan_small = fan_out(receivers, 64, sampler, "64 B sent to #{receivers}")
    Kit.event(sampler, "receivers exit")
    recording = Kit.stop(sampler)

    chart =
      Kit.chart(
        opts,
        "binaries.svg",
        "Binaries: heap (<= 64 B) vs off-heap (> 64 B)",
        recording,
        [
          {:binary, ":erlang.memory(:binary)"},
          {:processes, ":erlang.memory(:processes_used)"}
        ]
      )

    Kit.progress(opts, ["chart: ", chart])

    %{
      count: count,
      receivers: receivers,
      small: small,
      large: large,
      fan_big: fan_big,
      fan_small: fan_small,
      chart: chart
    }
  end

  # A process makes `count` binaries of `size` bytes and keeps them; figures read while it holds
  # them, then it exits.
  defp holder_of(count, size) do
    parent = self()
    vm0 = :erlang.memory(:binary)

    pid =
      spawn(fn ->
        bins = for i <- 1..count, do: :binary.copy(<<rem(i, 251)>>, size)
        words = :erts_debug.flat_size(hd(bins))
        send(parent, {:made, self(), words, :erts_debug.flat_size(bins)})
        receive(do: (:stop -> length(bins)))
      end)

    {words, total_words} = receive(do: ({:made, ^pid, w, t} -> {w, t}))
    vm1 = :erlang.memory(:binary)
    {:binary, listed} = Process.info(pid, :binary)
    {:memory, mem} = Process.info(pid, :memory)
    send(pid, :stop)

    %{
      size: size,
      heap_bytes_each: words * Kit.word(),
      heap_bytes_all: total_words * Kit.word(),
      process_memory: mem,
      pinfo_refs: length(listed),
      pinfo_bytes: listed |> Enum.map(&elem(&1, 1)) |> Enum.sum(),
      vm_binary_delta: vm1 - vm0
    }
  end

  # One binary of `size` bytes sent to `n` waiting processes; each reports what it received.
  defp fan_out(n, size, sampler, event) do
    parent = self()
    vm0 = :erlang.memory(:binary)
    bin = :binary.copy(<<7>>, size)

    pids =
      for _ <- 1..n do
        spawn(fn ->
          receive do
            {:bin, b} ->
              send(parent, {:got, self(), :erts_debug.flat_size(b)})
              receive(do: (:stop -> byte_size(b)))
          end
        end)
      end

    for pid <- pids, do: send(pid, {:bin, bin})
    heap_words = for pid <- pids, do: receive(do: ({:got, ^pid, w} -> w))
    vm1 = :erlang.memory(:binary)
    Kit.event(sampler, event)

    # Per-receiver figures summed over the receivers: the naive one counts the shared binary
    # once per holder; PSS splits it among its holders (the receivers and this process).
    figs = pids |> Kit.procs() |> Map.values()

    refc =
      case Process.info(hd(pids), :binary) do
        {:binary, [{_id, ^size, refc}]} -> refc
        _ -> 0
      end

    # Receivers gone and our own reference collected, so the next step starts clean.
    for pid <- pids, do: Kit.kill(pid)
    :erlang.garbage_collect()

    %{
      size: size,
      receivers: n,
      vm_binary_delta: vm1 - vm0,
      receiver_heap_bytes: Enum.sum(heap_words) * Kit.word(),
      naive_sum: figs |> Enum.map(& &1.bin_bytes) |> Enum.sum(),
      pss_sum: figs |> Enum.map(& &1.bin_pss) |> Enum.sum(),
      refc: refc
    }
  end

  @impl true
  def render(r) do
    rows =
      for x <- [r.small, r.large] do
        [
          "#{r.count} x #{x.size} B",
          b(x.heap_bytes_each),
          b(x.heap_bytes_all),
          x.pinfo_refs,
          b(x.pinfo_bytes),
          b(x.vm_binary_delta)
        ]
      end

    fan =
      for x <- [r.fan_big, r.fan_small] do
        [
          "#{b(x.size)} sent to #{x.receivers}",
          b(x.size * x.receivers),
          b(x.vm_binary_delta),
          b(x.receiver_heap_bytes),
          x.refc,
          b(x.naive_sum),
          b(x.pss_sum)
        ]
      end

    [
      Table.render(
        [
          "binaries held by one process",
          "on heap, each",
          "on heap, whole list",
          "process_info(:binary) refs",
          "process_info(:binary) bytes",
          ":erlang.memory(:binary) delta"
        ],
        rows
      ),
      "\n",
      Table.render(
        [
          "fan-out",
          "bytes if copied",
          ":erlang.memory(:binary) delta",
          "bytes on receivers' heaps",
          "refcount seen",
          "sum of process_info(:binary)",
          "sum of Binscope binary_pss"
        ],
        fan
      ),
      "\nA 64-byte binary costs #{b(r.small.heap_bytes_each)} of heap and is invisible to ",
      "process_info(:binary); a 65-byte one costs a #{b(r.large.heap_bytes_each)} #{ref_name()} on the heap ",
      "(OTP #{Kit.otp()}) ",
      "and is listed there with its bytes off-heap.\n",
      "Making #{b(r.fan_big.size)} and sending it to #{r.fan_big.receivers} processes grew ",
      ":erlang.memory(:binary) by #{b(r.fan_big.vm_binary_delta)}: one shared copy ",
      "(refcount #{r.fan_big.refc}), not #{b(r.fan_big.size * r.fan_big.receivers)}; ",
      "the receivers' heaps hold #{b(r.fan_big.receiver_heap_bytes)} of #{ref_name()}s in all. ",
      "Summed over the receivers, process_info(:binary) reports #{b(r.fan_big.naive_sum)}; ",
      "Binscope's binary_pss (each binary split among its holders) sums to ",
      "#{b(r.fan_big.pss_sum)}.\n",
      "Chart: #{r.chart}\n"
    ]
  end

  # The VM's name for the heap term that points at an off-heap binary.
  defp ref_name do
    if Kit.otp() >= 27, do: "BinRef", else: "ProcBin"
  end
end
