defmodule Binscope.Lab.Native do
  # The lab NIF's stubs (native/binscope_lab_nif), one per `#[rustler::nif]`: what demos and
  # benchmarks need and an app never does, so an app's release carries none of it.
  @moduledoc false

  @on_load :load_nif

  @doc false
  def load_nif do
    case :code.priv_dir(:binscope) do
      {:error, reason} -> {:error, {:no_priv_dir, reason}}
      priv -> :erlang.load_nif(:filename.join(priv, ~c"native/libbinscope_lab_nif"), 0)
    end
  end

  # chart.rs
  def chart_line(_path, _title, _x_label, _y_label, _series, _events), do: err()
  def chart_bars(_path, _title, _y_label, _bars), do: err()

  # floor.rs
  def floor_copy(_size, _calls), do: err()
  def floor_resource_put(_binary), do: err()
  def floor_vm_resource(_size), do: err()
  def floor_ring_put(_binary), do: err()

  defp err, do: :erlang.nif_error(:not_loaded)
end
