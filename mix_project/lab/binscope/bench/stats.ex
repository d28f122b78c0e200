defmodule Binscope.Bench.Stats do
  @moduledoc """
  Order statistics of benchmark samples: median, percentiles (nearest rank), min, max, mean.

  Pure functions on lists of numbers, so they can be unit-tested without running anything.
  """

  @typedoc "A summary of a list of samples."
  @type summary :: %{
          n: non_neg_integer(),
          median: number(),
          p99: number(),
          min: number(),
          max: number(),
          mean: float()
        }

  @doc """
  The median: the middle sample, or the mean of the two middle samples for an even count.

      iex> Binscope.Bench.Stats.median([5, 1, 3])
      3
      iex> Binscope.Bench.Stats.median([4, 1, 3, 2])
      2.5
  """
  @spec median([number(), ...]) :: number()
  def median([_ | _] = samples) do
    sorted = Enum.sort(samples)
    n = length(sorted)
    mid = div(n, 2)

    if rem(n, 2) == 1 do
      Enum.at(sorted, mid)
    else
      (Enum.at(sorted, mid - 1) + Enum.at(sorted, mid)) / 2
    end
  end

  def median(other),
    do: raise(ArgumentError, "median needs a non-empty list, got: #{inspect(other)}")

  @doc """
  The `p`-th percentile by the nearest-rank method: the smallest sample such that at least `p`
  percent of the samples are less than or equal to it (rank `ceil(p / 100 * n)`, at least 1).
  With fewer than 100 samples the 99th percentile is therefore the maximum.

      iex> Binscope.Bench.Stats.percentile(Enum.to_list(1..200), 99)
      198
      iex> Binscope.Bench.Stats.percentile([3, 1, 2], 99)
      3
      iex> Binscope.Bench.Stats.percentile([3, 1, 2], 0)
      1
  """
  @spec percentile([number(), ...], number()) :: number()
  def percentile([_ | _] = samples, p) when is_number(p) and p >= 0 and p <= 100 do
    sorted = Enum.sort(samples)
    rank = max(1, ceil(p / 100 * length(sorted)))
    Enum.at(sorted, rank - 1)
  end

  def percentile(samples, p),
    do:
      raise(
        ArgumentError,
        "percentile needs a non-empty list and 0 <= p <= 100, got: #{inspect(samples)}, #{inspect(p)}"
      )

  @doc """
  Median, 99th percentile, min, max and mean of `samples`.

      iex> Binscope.Bench.Stats.summary([1, 2, 3, 4, 100])
      %{n: 5, median: 3, p99: 100, min: 1, max: 100, mean: 22.0}
  """
  @spec summary([number(), ...]) :: summary()
  def summary([_ | _] = samples) do
    %{
      n: length(samples),
      median: median(samples),
      p99: percentile(samples, 99),
      min: Enum.min(samples),
      max: Enum.max(samples),
      mean: Enum.sum(samples) / length(samples)
    }
  end

  def summary(other),
    do: raise(ArgumentError, "summary needs a non-empty list, got: #{inspect(other)}")

  @doc """
  `numerator / denominator` as a float, or `nil` when the denominator is zero.

      iex> Binscope.Bench.Stats.ratio(3, 2)
      1.5
      iex> Binscope.Bench.Stats.ratio(3, 0)
      nil
  """
  @spec ratio(number(), number()) :: float() | nil
  def ratio(_numerator, denominator) when denominator == 0, do: nil
  def ratio(numerator, denominator), do: numerator / denominator
end
