# A real recording for README: a workload that fills ETS, grows heaps, puts store buffers and
# fragments binary_alloc, recorded every 250 ms for 8 s. From mix_project/:
#   MIX_ENV=test mix compile && elixir -pa _build/test/lib/binscope/ebin ../scripts/memory_recorder_demo.exs
{:ok, _} = Application.ensure_all_started(:binscope)
{:ok, rec} = Binscope.Memory.Recorder.start("../docs/memory_timeline", interval: 250)
t = :ets.new(:demo, [:public])
work = spawn(fn ->
  Process.sleep(1_000)
  for i <- 1..100_000, do: :ets.insert(t, {i, i})
  Process.sleep(1_000)
  heaps = for _ <- 1..20, do: spawn(fn -> l = Enum.to_list(1..200_000); receive do :stop -> length(l) end end)
  Process.sleep(1_000)
  bufs = for _ <- 1..4, do: Binscope.Store.alloc!(16 * 1_048_576, fill: ?x)
  Process.sleep(1_000)
  bins = for i <- 1..20_000, do: :binary.copy(<<rem(i, 256)>>, 4096)
  Process.sleep(1_000)
  kept = Enum.take_every(bins, 8)
  _ = length(bins)
  bins = nil
  :erlang.garbage_collect()
  Process.sleep(1_500)
  Enum.each(heaps, &send(&1, :stop))
  receive do :stop -> {kept, bufs, bins} end
end)
Process.sleep(8_000)
{:ok, r} = Binscope.Memory.Recorder.stop(rec)
IO.inspect(r)
Process.exit(work, :kill)
