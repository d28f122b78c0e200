defmodule Binscope.Native do
  # The NIF's stubs, one per `#[rustler::nif]` in native/binscope_nif (a missing stub makes the
  # whole library fail to load). Grouped by area, mirroring the Rust modules.
  @moduledoc false

  @on_load :load_nif

  @doc false
  def load_nif do
    case :code.priv_dir(:binscope) do
      {:error, reason} -> {:error, {:no_priv_dir, reason}}
      priv -> :erlang.load_nif(:filename.join(priv, ~c"native/libbinscope_nif"), 0)
    end
  end

  # store.rs
  def store_put(_data, _label, _owner), do: err()
  def store_put_dirty(_data, _label, _owner), do: err()
  def store_alloc(_size, _fill, _label, _owner), do: err()
  def store_alloc_dirty(_size, _fill, _label, _owner), do: err()
  def store_intern(_data, _label, _owner), do: err()
  def store_intern_dirty(_data, _label, _owner), do: err()
  def store_stats, do: err()
  def store_by_label, do: err()
  def store_by_owner, do: err()
  def store_live(_label, _owner, _older_than_ms, _limit), do: err()
  def store_set_capacity(_capacity), do: err()

  # accounting.rs
  def accounting_probe, do: err()
  def accounting_mark, do: err()
  def accounting_resolve(_lists, _offset, _magic_size, _mark), do: err()
  def accounting_attribute(_lists, _top_shared), do: err()
  def accounting_live_store_keys(_keys), do: err()
  def accounting_reclaimed(_before, _after, _live_store_keys), do: err()
  def accounting_suggest(_facts), do: err()
  def accounting_rank(_candidates), do: err()

  # report.rs
  def report_json(_term, _pretty), do: err()

  # allocator.rs
  def allocator_stats, do: err()

  # chart.rs
  def chart_line(_path, _title, _x_label, _y_label, _series, _events), do: err()
  def chart_bars(_path, _title, _y_label, _bars), do: err()

  defp err, do: :erlang.nif_error(:not_loaded)
end
