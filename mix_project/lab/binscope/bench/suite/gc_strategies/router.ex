defmodule Binscope.Bench.Suite.GcStrategies.Router do
  @moduledoc false
  # The router of the GC strategies suite: forwards each packet's header to the sink and
  # forgets the packet, with the strategy's intervention after each message.
  use GenServer

  @impl true
  def init({strategy, sink, gc_every}),
    do: {:ok, %{strategy: strategy, sink: sink, every: gc_every, n: 0}}

  @impl true
  def handle_info({:packet, i, sent, <<kind, hdr::binary-size(15), _::binary>>}, st) do
    send(st.sink, {:routed, i, sent, kind, :binary.copy(hdr)})
    st = %{st | n: st.n + 1}

    case st.strategy do
      :hibernate ->
        {:noreply, st, :hibernate}

      :gc_every ->
        if rem(st.n, st.every) == 0, do: :erlang.garbage_collect()
        {:noreply, st}

      _ ->
        {:noreply, st}
    end
  end
end
