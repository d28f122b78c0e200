defmodule Binscope.Error do
  @moduledoc """
  Raised by the bang functions (`Binscope.Store.put!/2` and friends) when the store refuses a
  request at run time. `reason` is the atom the non-bang function returns in `{:error, reason}`:

    * `:capacity` - the request would take the store over its capacity (`Binscope.Store.set_capacity/1`);
    * `:alloc_failed` - the allocator refused the memory;
    * `:label_limit` - the store already tracks its maximum number of distinct labels (65,536).
  """
  defexception [:reason, :message]

  @impl true
  def exception(reason) when is_atom(reason) do
    %__MODULE__{reason: reason, message: "Binscope store refused the request: #{reason}"}
  end
end
