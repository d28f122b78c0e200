defmodule Binscope.Store.GcPressure do
  @moduledoc """
  Store binaries put GC pressure on the processes that hold them, as VM binaries do, on every OTP.

  ## Why

  A process is garbage-collected when the bytes of the off-heap binaries it references (its
  *virtual binary heap*) pass a threshold; that is what frees a dropped 1 MiB binary in a process
  whose heap barely grows. Up to OTP 26 a NIF resource binary (what the store hands out) charged
  its full size. OTP 27 reworked bitstrings and charges each reference the size of the VM-side
  `Binary` behind it, which for a resource binary is the small magic binary holding the resource
  object (OTP issue 11611). Measured on OTP 29 without the remedy: a process holding 100 MiB of
  store binaries has a virtual binary heap of 7 words, and a server that is sent 400 frames of
  256 KiB and keeps only the latest keeps all 100 MiB until something else collects it.

  ## The remedy, and how it is checked

  Before a store binary's first reference exists, the NIF writes the payload's length into its
  magic binary's `orig_size`. From then on the VM itself charges every holder exactly what an
  ordinary refc binary of that size would cost: the creating process, every process a message
  copies it to, and each GC's recount. `process_info(pid, :binary)` and
  `:binary.referenced_byte_size/1` then report the real size too.

  The field is not taken on trust. `calibrate/0` runs once per node when `Binscope.Native` loads:

    1. it measures whether the VM already charges a probe's payload (OTP 25, or a future OTP with
       the upstream fix); if it does, nothing is ever written (`mode: :native`);
    2. otherwise it finds the word of the probe's magic binary equal to the size the VM lists
       for it, writes a test value there and checks that `process_info/2` lists exactly that
       (where another header word holds the same value by chance, as seen once on OTP 27, each
       such word is tried in turn and restored);
    3. it then makes a second probe the way store binaries are made and checks that the process's
       virtual binary heap grew by the payload.

  Any failed check leaves the store unpatched (`mode: :unavailable`, with the reason in
  `status/0`): store binaries then keep the VM's small charge, and Binscope says so rather than
  guess.

  ## Costs and dangers

    * CPU: one word written per store binary made (a few nanoseconds); calibration at load takes
      well under a millisecond.
    * Pauses: none of its own. Holders are collected by the VM's normal GC triggers, exactly as
      often as they would be if they held VM binaries of the same sizes; each of those GCs costs
      what a GC of that process costs (proportional to its live heap).
    * Crash dumps: a crash dump prints `orig_size` bytes of every binary it finds on a process
      heap. For a patched store binary those bytes are read from the magic binary, not from the
      payload, so a dump taken while store binaries are alive shows meaningless bytes for them
      (and reads past a small allocation).

  ## Turning it off

  Set `BINSCOPE_GC_PRESSURE=off` in the environment before the node loads Binscope, or call
  `Binscope.Store.GcPressure.enable(false)` at run time (binaries made afterwards are not
  patched; patched ones keep their charge until freed).
  """

  alias Binscope.Native

  # Written once by Binscope.Native's on_load (the calibration lives there: see its comment).
  @status_key {__MODULE__, :status}

  @typedoc """
  How store binaries charge their holders on this node:

    * `:native` - the VM charges the payload itself (OTP 25 and 26);
    * `:patched` - Binscope's remedy is active (OTP 27 and later);
    * `:off` - the remedy was available but turned off;
    * `:unavailable` - a calibration check failed; store binaries charge only the VM's small size.
  """
  @type mode :: :native | :patched | :off | :unavailable

  @type status :: %{mode: mode(), reason: String.t() | nil, otp_release: String.t()}

  @doc """
  How store binaries put GC pressure on their holders on this node, and why.

  Cheap (a `persistent_term` read); safe on a busy node.

      iex> Binscope.Store.GcPressure.status().mode in [:native, :patched, :off, :unavailable]
      true
  """
  @spec status() :: status()
  def status do
    # The NIF call first: it loads Binscope.Native, whose on_load writes the status.
    state = Native.gc_pressure_state()
    base = :persistent_term.get(@status_key, %{mode: :unavailable, reason: "not calibrated"})

    mode =
      case {base.mode, state} do
        {:patched, {true, false, _}} -> :off
        {:off, {true, true, _}} -> :patched
        {mode, _} -> mode
      end

    Map.merge(base, %{mode: mode, otp_release: otp_release()})
  end

  @doc """
  `true` when a store binary charges its holders its full size on this node (`:native` or
  `:patched`): `native_estimated_bytes` and leak rankings that read the virtual binary heap are
  then meaningful for store binaries.
  """
  @spec charged?() :: boolean()
  def charged?, do: status().mode in [:native, :patched]

  @doc """
  `true` when store binaries made now are listed by `process_info(pid, :binary)` (and
  `:binary.referenced_byte_size/1`) at their real size, i.e. the patch is on (`:patched`).
  Elsewhere the VM lists each at the size of its magic binary, a few dozen bytes.
  """
  @spec listed_at_real_size?() :: boolean()
  def listed_at_real_size?, do: status().mode == :patched

  @doc """
  Turns the remedy on or off for store binaries made from now on. Returns `{:error, mode}` where
  there is nothing to turn (`:native` needs no remedy; `:unavailable` cannot have one).
  """
  @spec enable(boolean()) :: :ok | {:error, :native | :unavailable}
  def enable(on) when is_boolean(on) do
    _ = Native.gc_pressure_state()

    case :persistent_term.get(@status_key, %{mode: :unavailable}).mode do
      mode when mode in [:patched, :off] ->
        true = Native.gc_pressure_enable(on)
        :ok

      mode ->
        {:error, mode}
    end
  end

  defp otp_release, do: List.to_string(:erlang.system_info(:otp_release))
end
