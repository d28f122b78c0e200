defmodule Binscope.Native do
  # The NIF's stubs, one per `#[rustler::nif]` in native/binscope_nif (a missing stub makes the
  # whole library fail to load). Grouped by area, mirroring the Rust modules.
  @moduledoc false

  @on_load :load_nif

  import Bitwise, only: [<<<: 2]

  @doc false
  def load_nif do
    case :code.priv_dir(:binscope) do
      {:error, reason} ->
        {:error, {:no_priv_dir, reason}}

      priv ->
        with :ok <- :erlang.load_nif(:filename.join(priv, ~c"native/libbinscope_nif"), 0) do
          :persistent_term.put({Binscope.Store.GcPressure, :status}, calibrate_gc_pressure())
        end
    end
  end

  # --- GC pressure calibration (see Binscope.Store.GcPressure for what and why) ---------------
  # It runs here, in on_load, because it must run before any store binary is made, and it calls
  # only this module's NIFs and OTP/Elixir built-ins: in a release (embedded mode) another module
  # of this application may not be loaded yet.

  @probe_bytes 1 <<< 20
  # A probe counts as charged from half its size on: a GC between the two readings may also drop
  # other garbage (seen: 1 MiB - 56 bytes), while an uncharged probe adds about 72 bytes.
  @charged_bytes div(@probe_bytes, 2)
  # The largest distance between a listed magic binary and its resource object (NIF MAX_HEADER).
  @max_header 256

  # Never fails the load: any surprise leaves the store unpatched, with the reason.
  defp calibrate_gc_pressure do
    do_calibrate_gc_pressure()
  rescue
    e -> %{mode: :unavailable, reason: "calibration raised: " <> Exception.message(e)}
  end

  defp do_calibrate_gc_pressure do
    words_before = vheap_words()
    {probe, object} = gc_pressure_probe(@probe_bytes, false)
    charged = (vheap_words() - words_before) * :erlang.system_info(:wordsize)

    result =
      if charged >= @charged_bytes,
        do: %{mode: :native, reason: "the VM charges resource binaries their size"},
        else: patch_gc_pressure(probe, object)

    keep(probe)
    result
  end

  defp patch_gc_pressure(probe, object) do
    with {:ok, {listed, size}} <- listed_header(object),
         :ok <- locate(probe, listed, size, 0),
         :ok <- charge_check() do
      if System.get_env("BINSCOPE_GC_PRESSURE", "on") in ["off", "false", "0"] do
        %{mode: :off, reason: "BINSCOPE_GC_PRESSURE=off"}
      else
        true = gc_pressure_enable(true)
        %{mode: :patched, reason: "the VM charges resource binaries their magic binary's size"}
      end
    else
      {:error, reason} ->
        gc_pressure_reset()
        %{mode: :unavailable, reason: reason}
    end
  end

  # The binary this process holds whose VM header lies nearest below the probe's object.
  defp listed_header(object) do
    case near(object) do
      [found | _] -> {:ok, found}
      [] -> {:error, "no listed binary could be the probe's header"}
    end
  end

  # The header word equal to the listed size that process_info/2 lists, trying each such word in
  # turn (another can hold the same value by chance: seen once on OTP 27, where calibration then
  # gave up and left the store unpatched).
  defp locate(probe, listed, size, nth) do
    with {:ok, {_offset, candidates}} <- gc_pressure_locate(probe, listed, size, nth) do
      case poke_check(probe, listed, size) do
        :ok -> :ok
        {:error, _} when nth + 1 < candidates -> locate(probe, listed, size, nth + 1)
        {:error, reason} -> {:error, "#{reason} (#{candidates} candidates tried)"}
      end
    end
  end

  # Writes a test size into the located word and reads it back through process_info/2; the word
  # is restored to the listed size, which it held.
  defp poke_check(probe, listed, size) do
    test = size + 4096
    true = gc_pressure_poke(probe, test)
    seen = listed_size(listed)
    true = gc_pressure_poke(probe, size)

    if seen == test and listed_size(listed) == size,
      do: :ok,
      else: {:error, "the located word is not the size process_info/2 lists"}
  end

  # A probe made the way store binaries are made must list, and charge this process, its payload.
  defp charge_check do
    words_before = vheap_words()
    {probe, object} = gc_pressure_probe(@probe_bytes, true)
    charged = (vheap_words() - words_before) * :erlang.system_info(:wordsize)
    listed = for {_addr, size} <- Enum.take(near(object), 1), do: size
    keep(probe)

    cond do
      listed != [@probe_bytes] ->
        {:error, "a patched probe lists as #{inspect(listed)} bytes"}

      charged < @charged_bytes ->
        {:error, "a patched probe charged #{charged} bytes, not its size"}

      true ->
        :ok
    end
  end

  # Listed binaries whose header could hold `object`, nearest first (a probe allocated just
  # before may be listed within reach too; the header directly precedes its object).
  defp near(object) do
    {:binary, listed} = :erlang.process_info(self(), :binary)

    for({addr, size, _} <- listed, addr < object, object - addr <= @max_header, do: {addr, size})
    |> Enum.sort_by(fn {addr, _} -> object - addr end)
  end

  defp listed_size(addr) do
    {:binary, listed} = :erlang.process_info(self(), :binary)
    Enum.find_value(listed, fn {a, size, _} -> if a == addr, do: size end)
  end

  defp vheap_words do
    {:garbage_collection_info, info} = :erlang.process_info(self(), :garbage_collection_info)
    Keyword.fetch!(info, :bin_vheap_size)
  end

  # Keeps a probe referenced until this point (the checks read its header while it lives).
  defp keep(probe), do: byte_size(probe)

  # store.rs
  def store_put(_data, _label, _owner), do: err()
  def store_put_large(_data, _label, _owner), do: err()
  def store_alloc(_size, _fill, _label, _owner), do: err()
  def store_alloc_dirty(_size, _fill, _label, _owner), do: err()
  def store_alloc_large(_size, _fill, _label, _owner), do: err()
  def store_intern(_data, _label, _owner), do: err()
  def store_intern_dirty(_data, _label, _owner), do: err()
  def store_stats, do: err()
  def store_by_label, do: err()
  def store_by_owner, do: err()
  def store_live(_label, _owner, _older_than_ms, _limit), do: err()
  def store_set_capacity(_capacity), do: err()
  def store_limits, do: err()

  # collector.rs: the target side, called by :binscope_collector on the inspected node
  def collector_probe, do: err()
  def collector_mark, do: err()
  def collector_resolve(_lists, _offset, _magic_size, _mark), do: err()
  def collector_live_store_keys(_keys), do: err()

  # accounting.rs
  def accounting_attribute(_lists, _slot, _top_shared), do: err()
  def accounting_scan_new(_resolve, _processes), do: err()
  def accounting_scan_batch(_scan, _batch), do: err()
  def accounting_attribute_scans(_scans, _top_shared), do: err()
  def accounting_top_packed(_packed, _width, _field, _pids, _k), do: err()
  def accounting_top_records(_records, _slot, _k), do: err()

  # leaks.rs
  def leaks_suggest(_facts), do: err()
  def leaks_rank(_candidates), do: err()
  def leaks_top_uss(_packed, _k), do: err()
  def leaks_full_rank(_results, _live_store_keys, _word_size, _limit), do: err()
  def leaks_round_new(_processes), do: err()
  def leaks_round_batch(_round, _batch), do: err()
  def leaks_round_batch_dirty(_round, _batch), do: err()
  def leaks_round_live_store_keys(_round), do: err()
  def leaks_full_rank_round(_round, _live_store_keys, _word_size, _limit), do: err()

  # gc_pressure.rs
  def gc_pressure_probe(_len, _charged), do: err()
  def gc_pressure_locate(_probe, _listed, _size, _nth), do: err()
  def gc_pressure_poke(_probe, _value), do: err()
  def gc_pressure_reset, do: err()
  def gc_pressure_enable(_on), do: err()
  def gc_pressure_state, do: err()

  # render.rs
  def render_json(_term, _pretty), do: err()

  # allocator.rs
  def allocator_stats, do: err()

  defp err, do: :erlang.nif_error(:not_loaded)
end
