defmodule Binscope.Memory.Breakdown do
  @moduledoc """
  Reconciles a node's resident set size (RSS) with what every allocator in the OS process
  says it holds, and names the allocators whose carriers are mostly empty.

  The figures, all in bytes, and how each is read:

  - `rss`, `rss_anon`, `rss_file`, `rss_shmem`, `swap`: the kernel's own counters for the OS
    process (`/proc/self/status`: `VmRSS` = `RssAnon` + `RssFile` + `RssShmem`). Exact.
    `rss_file` is the resident part of mapped files: the emulator, shared libraries, Binscope's
    NIF. `rss_shmem` is shared memory; with the JIT (OTP 25+ on x86_64 and arm64) that is
    mostly the emulator's generated code, which the JIT maps twice from one shared-memory file.
  - `vm_mapped`: address space the VM's allocators got from the OS: `vm_mmap` (the VM's own
    mmap layer: every `mseg_alloc` segment, including the segment cache) + `vm_literal_mmap`
    (the literal area, `literal_alloc`'s carriers) + `vm_malloc_carriers` (carriers that
    `sys_alloc`, i.e. malloc, supplied: each allocator's main carrier and more). Exact as an
    amount of address space; the kernel decides how much of it is resident (see below).
  - `vm_carriers`: the allocators' carriers (multiblock, pooled and single-block), and
    `vm_blocks`: what is allocated in them. `vm_carrier_free` = `vm_carriers` - `vm_blocks`:
    address space the VM holds but does not use; fragmentation shows here, not in
    `:erlang.memory/0`. `vm_mseg_cache`: segments freed by the allocators and kept mapped by
    `mseg_alloc` for reuse. (`:erlang.memory(:total)` differs from `vm_blocks`: it counts the
    JIT's code, which lives in its own shared mapping, in `rss_shmem`, and a few
    allocations made outside these allocators.)
  - `native_resident`: jemalloc's resident bytes (Binscope's store, the freed payload blocks it
    keeps for reuse, `Binscope.Store.allocator/0`'s `payload_cache_bytes`, and the rest of the
    NIF's heap). jemalloc documents this figure as a maximum: pages it has handed out but that
    nobody wrote are counted although the kernel has not backed them yet.
  - `vm_resident`: the VM's resident memory. No allocator knows it: the VM's figures are
    address space, and the VM hands free pages inside carriers back to the kernel
    (`madvise`) in places, e.g. when blocks are freed in carriers that sit in the carrier
    pool. (Measured on the mixed node of the tests: 166 MiB of binary_alloc carriers held
    20 MiB of binaries, while the whole VM had 84 MiB resident beyond its blocks, 30 MiB of
    it the segment cache.) So it
    is read off the kernel: `rss_anon` - `native_resident`, kept within the range the VM's
    own figures allow (`vm_blocks` .. `vm_mapped`). `vm_unused_resident` = `vm_resident` -
    `vm_blocks`: resident memory the VM holds without using it (free space in carriers,
    the segment cache), plus the small native rest below: what fragmentation costs in RSS
    now, where `vm_carrier_free` is what it costs in address space.
  - `unaccounted`: the part of `rss_anon` - `native_resident` outside that range, so that
    `rss` = `rss_file` + `rss_shmem` + `native_resident` + `vm_resident` + `unaccounted`;
    `unaccounted_share` = `unaccounted / rss`. Positive: anonymous memory no allocator's
    figures can hold (malloc calls outside the VM's allocators by drivers or other NIFs,
    a large number of thread stacks). Negative: pages the VM or jemalloc count but nobody
    ever wrote (a heap reserved with `min_heap_size`, a zero-filled store buffer), which the
    kernel has not backed.

  `unaccounted` = 0 therefore means that nothing contradicts the figures, not that every byte
  was traced: on a fragmented node the range is wide, and anonymous memory allocated by some
  other library shows as `vm_unused_resident` until it exceeds the VM's own address space.

  What cannot be known from inside the VM, and so is part of `vm_resident` when it fits in
  the range: the touched part of thread stacks (`threads` gives their number), malloc's own
  free lists and small mallocs outside the VM's allocators. Which of the VM's carriers are
  resident cannot be known either: the kernel counts pages, not carriers.

  Cost: see `Binscope.memory/1`.
  """

  # An allocator whose carriers are mostly free, and large enough to matter.
  @min_free 8 * 1024 * 1024
  @max_usage 0.5

  @typedoc "One allocator type, summed over its instances."
  @type allocator :: %{
          allocator: atom(),
          carriers: non_neg_integer(),
          blocks: non_neg_integer(),
          free: non_neg_integer(),
          usage: float() | nil,
          mbcs_carriers: non_neg_integer(),
          mbcs_blocks: non_neg_integer(),
          mbcs_count: non_neg_integer(),
          pool_carriers: non_neg_integer(),
          pool_blocks: non_neg_integer(),
          sbcs_carriers: non_neg_integer(),
          sbcs_blocks: non_neg_integer(),
          sbcs_count: non_neg_integer(),
          malloc_carriers: non_neg_integer()
        }

  @doc """
  The reconciliation fields for a collector `node_memory/0` result (`raw`), given the native
  resident bytes already read from it. Unknown inputs (no `/proc`, an OTP that hides its
  allocators) make the figures that need them `:unavailable`.
  """
  @spec fields(map(), non_neg_integer()) :: map()
  def fields(raw, native_resident) do
    kernel = Map.get(raw, :kernel, :unavailable)
    vm = Map.get(raw, :vm_allocators, :unavailable)
    allocators = allocators(vm)

    vm_fields = vm_fields(vm, allocators)
    kernel_fields = kernel_fields(kernel)

    # The kernel knows how much anonymous memory is resident, but not whose it is; the VM and
    # jemalloc know what they hold, but not how much of it is resident. What is left of the
    # anonymous RSS once jemalloc's share is taken is the VM's (and the small native rest's):
    # it must lie between what the VM's blocks hold and the address space its carriers span.
    # Whatever falls outside that range no figure explains: that is `unaccounted`.
    {vm_resident, unaccounted} =
      with %{rss_anon: anon} when is_integer(anon) <- kernel_fields,
           %{vm_mapped: high, vm_blocks: low} when is_integer(high) <- vm_fields do
        derived = anon - native_resident
        resident = derived |> max(low) |> min(high)
        {resident, derived - resident}
      else
        _ -> {:unavailable, :unavailable}
      end

    share =
      case {unaccounted, kernel_fields[:rss]} do
        {u, r} when is_integer(u) and is_integer(r) and r > 0 -> u / r
        _ -> :unavailable
      end

    free_resident =
      if is_integer(vm_resident), do: vm_resident - vm_fields.vm_blocks, else: :unavailable

    kernel_fields
    |> Map.merge(vm_fields)
    |> Map.merge(%{
      vm_resident: vm_resident,
      vm_unused_resident: free_resident,
      unaccounted: unaccounted,
      unaccounted_share: share,
      allocators: allocators,
      fragmentation: diagnose(allocators)
    })
  end

  defp kernel_fields(%{"VmRSS" => rss} = k) do
    %{
      rss: rss,
      rss_anon: Map.get(k, "RssAnon", :unavailable),
      rss_file: Map.get(k, "RssFile", 0),
      rss_shmem: Map.get(k, "RssShmem", 0),
      swap: Map.get(k, "VmSwap", 0),
      threads: Map.get(k, "Threads", :unavailable)
    }
  end

  defp kernel_fields(_) do
    %{
      rss: :unavailable,
      rss_anon: :unavailable,
      rss_file: :unavailable,
      rss_shmem: :unavailable,
      swap: :unavailable,
      threads: :unavailable
    }
  end

  defp vm_fields(%{erts_mmap: mmap, literal_mmap: lit, mseg_segments: mseg}, allocators)
       when is_integer(mmap) and is_integer(lit) and is_integer(mseg) do
    carriers = sum(allocators, :carriers)
    malloc = sum(allocators, :malloc_carriers)

    %{
      vm_mapped: mmap + lit + malloc,
      vm_mmap: mmap,
      vm_literal_mmap: lit,
      vm_malloc_carriers: malloc,
      vm_carriers: carriers,
      vm_blocks: sum(allocators, :blocks),
      vm_carrier_free: sum(allocators, :free),
      vm_mseg_cache: max(mmap - mseg, 0)
    }
  end

  defp vm_fields(_, allocators) do
    %{
      vm_mapped: :unavailable,
      vm_mmap: :unavailable,
      vm_literal_mmap: :unavailable,
      vm_malloc_carriers: :unavailable,
      vm_carriers: sum(allocators, :carriers),
      vm_blocks: sum(allocators, :blocks),
      vm_carrier_free: sum(allocators, :free),
      vm_mseg_cache: :unavailable
    }
  end

  defp sum(list, k), do: Enum.reduce(list, 0, &(&2 + Map.fetch!(&1, k)))

  @doc "Allocator types from the collector's figures, the most free carrier bytes first."
  @spec allocators(map() | term()) :: [allocator()]
  def allocators(%{carriers: per_type}) when is_map(per_type) do
    per_type
    |> Enum.map(fn {name, %{mbcs: {mc, mb, mn}, mbcs_pool: {pc, pb, _}, sbcs: {sc, sb, sn}} = a} ->
      carriers = mc + pc + sc
      blocks = mb + pb + sb

      %{
        allocator: name,
        carriers: carriers,
        blocks: blocks,
        free: max(carriers - blocks, 0),
        usage: if(carriers > 0, do: blocks / carriers, else: nil),
        mbcs_carriers: mc,
        mbcs_blocks: mb,
        mbcs_count: mn,
        pool_carriers: pc,
        pool_blocks: pb,
        sbcs_carriers: sc,
        sbcs_blocks: sb,
        sbcs_count: sn,
        malloc_carriers: Map.get(a, :sys_alloc, 0)
      }
    end)
    |> Enum.sort_by(&{-&1.free, &1.allocator})
  end

  def allocators(_), do: []

  @doc """
  Allocators holding mostly-empty carriers (at least 8 MiB free and under 50 % used), each with
  the emulator flags that address it and their documented effect (OTP's erts_alloc reference).
  """
  @spec diagnose([allocator()]) :: [map()]
  def diagnose(allocators) do
    for a <- allocators, a.free >= @min_free, a.usage != nil, a.usage < @max_usage do
      %{
        allocator: a.allocator,
        free: a.free,
        usage: a.usage,
        where: if(a.mbcs_carriers + a.pool_carriers >= a.sbcs_carriers, do: :mbcs, else: :sbcs),
        advice: advice(a)
      }
    end
  end

  defp advice(a) do
    letter = letter(a.allocator)

    mbcs = [
      "+M#{letter}as aoffcbf (or aoff, aobf): address-order strategies pick the free block " <>
        "at the lowest address that fits, which tends to keep high-addressed carriers empty " <>
        "enough to be freed; only the aoff* and ageff* strategies support carrier abandonment",
      "+M#{letter}acul <0..100> (abandon carrier utilization limit, default de = enabled for " <>
        "most types): an instance whose utilization falls below the limit abandons carriers; " <>
        "other instances fetch abandoned carriers before creating new ones",
      "+M#{letter}acful <0..100> (abandon carrier free utilization limit, default 0 = off): " <>
        "unused memory in carriers below this utilization is given back to the OS with " <>
        "madvise(MADV_FREE) while the carrier stays mapped (accepted by OTP 25.2 and 29 here)",
      "+M#{letter}lmbcs <KB> (largest multiblock carrier size): smaller carriers empty out, " <>
        "and are unmapped, more often, at the price of more carriers"
    ]

    sbcs = [
      "+M#{letter}sbct <KB> (single-block carrier threshold): blocks larger than it get a " <>
        "carrier of their own, unmapped when the block is freed; smaller ones share " <>
        "multiblock carriers"
    ]

    restart =
      "These are start-up flags (erl +M..., or ERL_FLAGS / vm.args in a release). Free space " <>
        "that live blocks pin inside a carrier is released only when those blocks are freed: " <>
        "for memory that is already fragmented, restarting the node (or the processes or " <>
        "tables holding the blocks) is the only remedy."

    if a.sbcs_carriers > a.mbcs_carriers + a.pool_carriers,
      do: sbcs ++ [restart],
      else: mbcs ++ sbcs ++ [restart]
  end

  defp letter(:binary_alloc), do: "B"
  defp letter(:std_alloc), do: "D"
  defp letter(:ets_alloc), do: "E"
  defp letter(:fix_alloc), do: "F"
  defp letter(:eheap_alloc), do: "H"
  defp letter(:ll_alloc), do: "L"
  defp letter(:driver_alloc), do: "R"
  defp letter(:sl_alloc), do: "S"
  defp letter(:temp_alloc), do: "T"
  defp letter(:literal_alloc), do: "I"
  defp letter(_), do: "u"
end
