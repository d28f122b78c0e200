defmodule Binscope.Memory.Render do
  @moduledoc "Renders `Binscope.memory/1`'s report as the command line's table or CSV."

  alias Binscope.Render.{CSV, Format, Table}

  # The reconciliation, in the order it adds up: rss = files + shmem + native + vm + unaccounted.
  @reconciliation [
    :rss,
    :rss_file,
    :rss_shmem,
    :native_resident,
    :vm_resident,
    :unaccounted
  ]
  @vm [:vm_mapped, :vm_carriers, :vm_blocks, :vm_carrier_free, :vm_unused_resident] ++
        [:vm_mseg_cache, :vm_malloc_carriers]
  @erlang [:total, :processes, :binary, :ets, :atom, :code, :system]
  @native [:store_live_bytes, :native_allocated, :native_resident]

  @doc "CSV: one `category,bytes` row per scalar figure, then one row per allocator."
  @spec csv(map()) :: iodata()
  def csv(m) do
    scalars =
      m
      |> Enum.filter(fn {_k, v} -> is_integer(v) or is_float(v) or is_atom(v) end)
      |> Enum.sort()
      |> Enum.map(fn {k, v} -> [k, v] end)

    allocators =
      for a <- Map.get(m, :allocators, []),
          k <- [:carriers, :blocks, :free],
          do: ["#{a.allocator}.#{k}", Map.fetch!(a, k)]

    CSV.encode(["category", "bytes"], scalars ++ allocators)
  end

  @doc "Tables: the reconciliation of RSS, the VM's figures, the allocators, the diagnosis."
  @spec table(map()) :: iodata()
  def table(m) do
    share =
      case m[:unaccounted_share] do
        s when is_float(s) -> " (#{Float.round(s * 100, 1)} % of rss)"
        _ -> ""
      end

    [
      "node #{m.node}\n\n",
      "RSS = rss_file + rss_shmem + native_resident + vm_resident + unaccounted#{share}\n",
      rows(m, @reconciliation),
      "\nVM allocators (address space and blocks) and :erlang.memory/0\n",
      rows(m, @vm ++ @erlang),
      "\nNative (jemalloc: Binscope's store and NIF)\n",
      rows(m, @native),
      allocators(Map.get(m, :allocators, [])),
      diagnosis(Map.get(m, :fragmentation, []))
    ]
  end

  defp rows(m, keys) do
    rows = for k <- keys, Map.has_key?(m, k), do: [Atom.to_string(k), human(m[k]), m[k]]
    Table.render(["category", "size", "bytes"], rows)
  end

  defp allocators([]), do: []

  defp allocators(list) do
    rows =
      for a <- list, a.carriers > 0 do
        usage = if a.usage, do: "#{round(a.usage * 100)} %", else: "-"

        [a.allocator, human(a.carriers), human(a.blocks), human(a.free), usage] ++
          [human(a.mbcs_carriers + a.pool_carriers), human(a.sbcs_carriers)]
      end

    headers = ["allocator", "carriers", "blocks", "free", "usage", "mbcs+pool", "sbcs"]
    ["\nAllocators, most free first\n", Table.render(headers, rows)]
  end

  defp diagnosis([]),
    do: ["\nNo allocator holds mostly empty carriers (8 MiB free, < 50 % used).\n"]

  defp diagnosis(list) do
    for d <- list do
      [
        "\n#{d.allocator}: #{human(d.free)} free in its carriers (#{round(d.usage * 100)} % used)\n",
        Enum.map(d.advice, &["  - ", &1, "\n"])
      ]
    end
  end

  defp human(n) when is_integer(n), do: Format.bytes(n)
  defp human(other), do: to_string(other)
end
