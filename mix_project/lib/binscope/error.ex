defmodule Binscope.Error do
  @moduledoc """
  Raised by the bang functions when the non-bang one returns `{:error, reason}`; `reason` is that
  same term.

  From the store (`Binscope.Store.put!/2` and friends):

    * `:capacity` - the request would take the store over its capacity, or over the memory the
      machine (or its cgroup) can back (`Binscope.Store.set_capacity/1`);
    * `:cancelled` - a long fill stopped because its caller died (nobody sees this one);
    * `:alloc_failed` - the allocator refused the memory;
    * `:label_limit` - 65,536 other distinct labels have live binaries right now (labels are
      forgotten with their last binary, and `:default` and labels already in use are never
      refused).

  From inspection (`Binscope.memory!/1` and friends, see `Binscope.Remote`): `:not_distributed`,
  `:noconnection`, `:timeout`, `{:collector_load_failed, _}`, `{:remote_error, _}`,
  `{:collector_failed, _}`.

  Built only by `exception/1`: `raise Binscope.Error, reason` words the message from the
  reason; `raise Binscope.Error, reason: reason, message: message` takes the caller's.
  """
  defexception [:reason, :message]

  @impl true
  # `raise Binscope.Error, reason: r, message: m`: a caller's own wording (the lab's benchmarks).
  def exception(reason: reason, message: message) when is_binary(message),
    do: %__MODULE__{reason: reason, message: message}

  def exception(reason) do
    if store_reason?(reason),
      do: %__MODULE__{reason: reason, message: "Binscope store refused the request: #{reason}"},
      else: %__MODULE__{
        reason: reason,
        message: "Binscope inspection failed: #{inspect(reason, limit: 8)}"
      }
  end

  # The store's run-time reasons as its native code lists them (its caller errors raise
  # ArgumentError and never reach here).
  defp store_reason?(reason) when is_atom(reason) do
    limits = Binscope.Store.limits()
    reason in limits.errors and reason not in limits.caller_errors
  end

  defp store_reason?(_), do: false
end
