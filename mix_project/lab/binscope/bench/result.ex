defmodule Binscope.Bench.Result do
  @moduledoc """
  What `Binscope.Bench.run/3` and `Binscope.Bench.compare/2` report for one alternative.

  Figures are per call (a run makes `batch` calls) unless named per run:

    * `time_ns` - `Binscope.Bench.Stats.summary/1` of wall time per call (median, p99, min, max,
      mean) over the measured runs;
    * `throughput` - bytes per second at the median time, when the alternative declared `bytes:`
      (bytes handled per call), else `nil`;
    * `reductions`, `heap_words` (words allocated on the process heap), `binary_bytes` (refc
      binary bytes the process created or received: VM and store binaries alike),
      `store_allocs` (store allocations) - medians per call;
    * `minor_gcs`, `major_gcs` (collections of the measuring process), `node_gcs` (every process
      on the node), `vm_binary_delta` (`:erlang.memory(:binary)` change) and
      `store_bytes_delta` (store live bytes change) - medians per run;
    * `custom` - summaries of the values recorded with `Binscope.Bench.record/2`, per run;
    * `samples` - the raw per-run figures.
  """

  @enforce_keys [:name]
  defstruct [
    :name,
    :runs,
    :batch,
    :bytes,
    :time_ns,
    :throughput,
    :reductions,
    :heap_words,
    :binary_bytes,
    :minor_gcs,
    :major_gcs,
    :node_gcs,
    :vm_binary_delta,
    :store_allocs,
    :store_bytes_delta,
    custom: %{},
    samples: []
  ]

  @type t :: %__MODULE__{
          name: String.t(),
          runs: pos_integer(),
          batch: pos_integer(),
          bytes: non_neg_integer() | nil,
          time_ns: Binscope.Bench.Stats.summary(),
          throughput: float() | nil,
          reductions: number(),
          heap_words: number(),
          binary_bytes: number(),
          minor_gcs: number(),
          major_gcs: number(),
          node_gcs: number(),
          vm_binary_delta: number(),
          store_allocs: number(),
          store_bytes_delta: number(),
          custom: %{optional(term()) => Binscope.Bench.Stats.summary()},
          samples: [Binscope.Bench.Measure.sample()]
        }
end

defmodule Binscope.Bench.Comparison do
  @moduledoc """
  The outcome of `Binscope.Bench.compare/2`: one `Binscope.Bench.Result` per alternative (in the
  order given), the baseline's name, ratios against the baseline, and the memory left behind
  once every worker had exited (deltas of `:erlang.memory/0` figures and store live bytes).

  `ratios` maps each name to:

    * `speed` - baseline median time / this median time (2.0 = twice as fast as the baseline);
    * `heap_words`, `binary_bytes`, `reductions` - this / baseline (0.5 = half the baseline's);
    each `nil` when the baseline's figure is zero.
  """

  @enforce_keys [:baseline, :results]
  defstruct [:baseline, :results, ratios: %{}, left_behind: %{}]

  @type ratios :: %{
          speed: float() | nil,
          heap_words: float() | nil,
          binary_bytes: float() | nil,
          reductions: float() | nil
        }

  @type t :: %__MODULE__{
          baseline: String.t(),
          results: [Binscope.Bench.Result.t()],
          ratios: %{String.t() => ratios()},
          left_behind: %{atom() => integer()}
        }
end
