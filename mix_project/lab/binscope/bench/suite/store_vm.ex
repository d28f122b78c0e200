defmodule Binscope.Bench.Suite.StoreVm do
  @moduledoc """
  Suite 1, store vs the VM: `Binscope.Store.put/2` and `alloc/2` against `:binary.copy/1` and
  `<<0::size(n)-unit(8)>>` at 1 KiB, 64 KiB, 1 MiB and 16 MiB, in a steady cycle (a ring of
  `ring` live binaries in which each new one replaces, and drops, the oldest), and
  `Binscope.Store.intern/2` at 0%, 50% and 99% duplicate inputs against `put/2` and
  `:binary.copy/1`. Every comparison runs its alternatives interleaved (`Binscope.Bench.compare/2`).

  `run/1` returns the comparisons and a report (`Binscope.Bench.Report`); options override the
  sizes (the smoke test in the default suite runs it with tiny ones).
  """

  alias Binscope.Bench
  alias Binscope.Bench.Report
  alias Binscope.Store

  @kib 1024
  @mib 1024 * 1024
  @resource_floor "floor: resource binary (lab)"
  @vm_resource_floor "floor: VM resource, no copy (lab)"
  @ring_floor "floor: VM resource + warm copy (lab)"
  # The lab floors that show a static or ring buffer handle sizes up to this (floor.rs).
  @ladder_max 64 * @kib

  @defaults [
    sizes: [@kib, 64 * @kib, @mib, 16 * @mib],
    bytes_per_run: 128 * @mib,
    # Each run turns the ring over at least this often, so that a run of large binaries is a
    # cycle too: with 128 MiB a run and a ring of 8, a run of 16 MiB made 8 binaries and dropped
    # none, which measured the first fill of the ring (fresh pages for every alternative).
    min_turns: 8,
    runs: 9,
    warmup: 1,
    ring: 8,
    intern_size: 64 * @kib,
    intern_count: 256,
    intern_batch: 4,
    dup_percents: [0, 50, 99]
  ]

  @doc "Options for a run of a few seconds that checks the code paths, not the speed."
  @spec smoke_opts() :: keyword()
  def smoke_opts do
    [
      sizes: [@kib, 64 * @kib],
      bytes_per_run: 256 * @kib,
      min_turns: 2,
      # Five runs: the figures are medians, so a run disturbed by a collection elsewhere cannot
      # move them (with two, one such run failed the smoke test once).
      runs: 5,
      warmup: 0,
      ring: 2,
      intern_size: 4 * @kib,
      intern_count: 20,
      intern_batch: 1
    ]
  end

  @doc """
  Runs the suite. Returns `%{cycle: [{size, comparison}], intern: [{dup_percent, comparison,
  held}], report: report}` where `held` maps each alternative to the bytes it held after one
  pass over the inputs.
  """
  @spec run(keyword()) :: map()
  def run(opts \\ []) do
    o = Keyword.merge(@defaults, opts)
    cycle = for size <- o[:sizes], do: {size, cycle(size, o)}
    floor = for size <- o[:sizes], into: %{}, do: {size, floor(size, o)}
    intern = for d <- o[:dup_percents], do: intern(d, o)
    %{cycle: cycle, intern: intern, floor: floor, report: report(cycle, intern, floor, o)}
  end

  # The physical floor: the copy of the same bytes in the same cycle (native/binscope_lab_nif
  # floor.rs), median of `runs` runs of the same number of calls. `{warm_ns, fresh_ns}` per call.
  defp floor(size, o) do
    calls = calls_per_run(size, o)
    runs = for _ <- 1..o[:runs], do: Binscope.Lab.Native.floor_copy(size, calls)
    median = fn xs -> xs |> Enum.sort() |> Enum.at(div(length(xs), 2)) end
    {median.(Enum.map(runs, &elem(&1, 0))), median.(Enum.map(runs, &elem(&1, 1)))}
  end

  ## Steady cycle

  defp calls_per_run(size, o), do: max(o[:min_turns] * o[:ring], div(o[:bytes_per_run], size))

  defp cycle(size, o) do
    src = :binary.copy(<<1>>, size)
    ring = o[:ring]
    calls = calls_per_run(size, o)
    # Each alternative's worker builds its own ring of store-free filler first.
    init = fn -> :queue.from_list(for _ <- 1..ring, do: <<>>) end
    step = fn make -> fn q -> :queue.in(make.(), elem(:queue.out(q), 1)) end end

    alts = [
      {":binary.copy", step.(fn -> :binary.copy(src) end)},
      {"<<0::size(n)-unit(8)>>", step.(fn -> <<0::size(size)-unit(8)>> end)},
      {"Store.put", step.(fn -> Store.put!(src, label: :bench) end)},
      {"Store.alloc fill 0", step.(fn -> Store.alloc!(size, label: :bench) end)},
      {"Store.alloc fill 1", step.(fn -> Store.alloc!(size, fill: 1, label: :bench) end)}
    ]

    # The floor of any zero-copy native put (lab NIF, normal scheduler, so small sizes only):
    # what a resource binary over a fresh copy costs with no store around it.
    alts =
      if size < Store.dirty_thresholds().put,
        do: alts ++ [{@resource_floor, step.(fn -> Binscope.Lab.Native.floor_resource_put(src) end)}],
        else: alts

    # The same put built up piece by piece (the ladder table): the VM's resource machinery alone
    # (a binary over static bytes), then plus the copy into memory that is always warm.
    alts =
      if size <= @ladder_max,
        do:
          alts ++
            [
              {@vm_resource_floor, step.(fn -> Binscope.Lab.Native.floor_vm_resource(size) end)},
              {@ring_floor, step.(fn -> Binscope.Lab.Native.floor_ring_put(src) end)}
            ],
        else: alts

    Bench.compare!(alts,
      init: init,
      batch: calls,
      bytes: size,
      runs: o[:runs],
      warmup: o[:warmup]
    )
  end

  ## Intern with duplicates

  defp intern(dup_percent, o) do
    size = o[:intern_size]
    n = o[:intern_count]
    inputs = inputs(n, size, dup_percent)

    pass = fn make ->
      fn ->
        live0 = Store.stats().live_bytes
        held = Enum.map(inputs, make)
        # Bytes this pass holds: the store's live bytes it added (a delta, so store binaries
        # other code holds do not count), the inputs' size for the VM.
        Bench.record(:store_live_bytes, Store.stats().live_bytes - live0)
        _ = length(held)
        # Drop this pass's binaries before the next one, so "0% duplicates" stays 0%: a
        # previous pass's entries must not serve as dedup hits.
        :erlang.garbage_collect()
        released(live0)
      end
    end

    alts = [
      {":binary.copy", pass.(&:binary.copy/1)},
      {"Store.put", pass.(&Store.put!(&1, label: :bench))},
      {"Store.intern", pass.(&Store.intern!(&1, label: :bench))}
    ]

    cmp =
      Bench.compare!(alts,
        batch: o[:intern_batch],
        bytes: n * size,
        runs: o[:runs],
        warmup: o[:warmup]
      )

    held =
      Map.new(cmp.results, fn r ->
        bytes =
          if r.name == ":binary.copy", do: n * size, else: r.custom[:store_live_bytes].median

        {r.name, bytes}
      end)

    {dup_percent, cmp, held}
  end

  # The VM runs the destructors of the binaries a collection dropped at the scheduler's next
  # process switch, not in the collection: yield until they ran, so the next pass starts from the
  # same live bytes (its delta is its own) with no entry of this one left to hit.
  defp released(live0, tries \\ 1_000)
  defp released(_live0, 0), do: raise("store binaries of an intern pass were never released")

  defp released(live0, tries) do
    if Store.stats().live_bytes > live0 do
      if tries > 900, do: :erlang.yield(), else: Process.sleep(1)
      released(live0, tries - 1)
    end
  end

  @doc """
  `n` inputs of `size` bytes each, `dup_percent`% of which repeat one template's content; every
  input sits in its own memory (so each is a real copy source). Deterministic order.
  """
  @spec inputs(pos_integer(), pos_integer(), 0..100) :: [binary()]
  def inputs(n, size, dup_percent) do
    dups = div(n * dup_percent, 100)
    template = filler(0, size)
    uniques = for i <- 1..(n - dups)//1, do: filler(i, size)
    copies = for _ <- 1..dups//1, do: :binary.copy(template)
    interleave(uniques, copies)
  end

  defp filler(i, size) when size >= 8, do: <<i::64, :binary.copy(<<i::8>>, size - 8)::binary>>
  defp filler(i, size), do: :binary.copy(<<i::8>>, size)

  defp interleave([], b), do: b
  defp interleave(a, []), do: a
  defp interleave([x | a], [y | b]), do: [x, y | interleave(a, b)]

  ## Report

  defp report(cycle, intern, floor, o) do
    gib_s = fn size, ns -> Float.round(size / max(ns, 1) * 1.0e9 / 1024 ** 3, 2) end

    floor_rows =
      for {size, cmp} <- cycle do
        {warm, fresh} = floor[size]
        put = Enum.find(cmp.results, &(&1.name == "Store.put"))
        copy = Enum.find(cmp.results, &(&1.name == ":binary.copy"))

        [
          size_label(size),
          gib_s.(size, warm),
          gib_s.(size, fresh),
          Float.round(copy.throughput / 1024 ** 3, 2),
          Float.round(put.throughput / 1024 ** 3, 2),
          Report.ratio(copy.time_ns.median / warm),
          Report.ratio(cmp.ratios["Store.put"].speed),
          Report.ratio(warm / put.time_ns.median),
          beyond_copy(put.time_ns.median - warm)
        ]
      end

    # One row per size the lab floors cover: each step's speed vs :binary.copy, then Store.put.
    ladder_rows =
      for {size, cmp} <- cycle, size <= @ladder_max do
        speed = fn name -> Report.ratio(cmp.ratios[name].speed) end
        median = fn name -> Enum.find(cmp.results, &(&1.name == name)).time_ns.median end

        [
          size_label(size),
          Report.duration(median.(":binary.copy")),
          speed.(@vm_resource_floor),
          speed.(@ring_floor),
          speed.(@resource_floor),
          speed.("Store.put"),
          Report.ratio(median.(@resource_floor) / median.("Store.put"))
        ]
      end

    cycle_rows =
      for {size, cmp} <- cycle, r <- cmp.results do
        zero = Enum.find(cmp.results, &(&1.name == "<<0::size(n)-unit(8)>>"))

        [
          size_label(size),
          r.name,
          Float.round(r.throughput / 1024 ** 3, 2),
          Report.ratio(cmp.ratios[r.name].speed),
          Report.ratio(zero.time_ns.median / r.time_ns.median),
          Report.duration(r.time_ns.median),
          Report.duration(r.time_ns.p99),
          round(r.heap_words),
          round(r.binary_bytes)
        ]
      end

    intern_rows =
      for {d, cmp, held} <- intern, r <- cmp.results do
        [
          "#{d}%",
          r.name,
          Float.round(r.throughput / 1024 ** 3, 2),
          Report.ratio(cmp.ratios[r.name].speed),
          Binscope.Render.Format.bytes(round(held[r.name])),
          Report.duration(r.time_ns.median)
        ]
      end

    bars =
      for {size, cmp} <- cycle, name <- ["Store.put", "Store.alloc fill 1"] do
        {"#{size_label(size)} #{String.replace(name, "Store.", "")}", cmp.ratios[name].speed}
      end

    %{
      title: "Store vs the VM",
      intro:
        "Steady cycle: a ring of #{o[:ring]} live binaries per alternative, each new one replacing " <>
          "(and dropping) the oldest; about #{Binscope.Render.Format.bytes(o[:bytes_per_run])} " <>
          "made per run, and at least #{o[:min_turns] * o[:ring]} binaries; median of #{o[:runs]} runs after #{o[:warmup]} warm-up, alternatives " <>
          "interleaved round-robin. `fill 0` maps fresh zeroed pages without touching them; " <>
          "`fill 1` writes every byte. Intern: #{o[:intern_count]} inputs of " <>
          "#{Binscope.Render.Format.bytes(o[:intern_size])} per pass, all held until the pass ends.",
      tables: [
        %{
          title: "steady cycle",
          headers: [
            "size",
            "alternative",
            "GiB/s",
            "speed vs :binary.copy",
            "speed vs <<0::size(n)-unit(8)>>",
            "median/call",
            "p99/call",
            "heap words/call",
            "binary bytes/call"
          ],
          rows: cycle_rows
        },
        %{
          title: "physical floor: the copy, in the same cycle",
          headers: [
            "size",
            "copy floor GiB/s",
            "memcpy + fresh alloc GiB/s",
            ":binary.copy GiB/s",
            "Store.put GiB/s",
            "copy floor vs :binary.copy",
            "put vs :binary.copy",
            "put vs copy floor",
            "put beyond the copy"
          ],
          rows: floor_rows
        },
        %{
          title:
            "a resource-binary put built up piece by piece, each step vs :binary.copy " <>
              "(same cycle)",
          headers: [
            "size",
            ":binary.copy median",
            "VM resource alone (no copy)",
            "+ copy into warm memory",
            "+ a store payload (bare resource put)",
            "+ the store's bookkeeping (Store.put)",
            "put vs bare resource put"
          ],
          rows: ladder_rows
        },
        %{
          title: "intern with duplicates",
          headers: [
            "duplicates",
            "alternative",
            "GiB/s",
            "speed vs :binary.copy",
            "memory held by one pass",
            "median/pass"
          ],
          rows: intern_rows
        }
      ],
      chart: %{title: "Store speed vs :binary.copy (steady cycle)", y_label: "x", bars: bars}
    }
  end

  # A put measured faster than the floor is within the two measurements' noise, not a gain.
  defp beyond_copy(ns) when ns < 0, do: "within noise"
  defp beyond_copy(ns), do: Report.duration(ns)

  @doc false
  def size_label(s) when s >= @mib, do: "#{div(s, @mib)} MiB"
  def size_label(s), do: "#{div(s, @kib)} KiB"
end
