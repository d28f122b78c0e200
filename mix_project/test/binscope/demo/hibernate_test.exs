defmodule Binscope.Demo.HibernateTest do
  use ExUnit.Case, async: false

  alias Binscope.Demo.Hibernate

  @moduletag :tmp_dir

  test "a hibernated server's heap is at its minimum; the plain one keeps its heap", %{
    tmp_dir: dir
  } do
    r = Hibernate.run(scale: 0.05, quiet: true, report_dir: dir)

    assert r.hibernated? == %{plain: false, hibernate: true, hibernate_after: true}
    # Hibernated: the heap holds only the live state, below a fresh server's minimum heap.
    assert r.after_idle.hibernate <= r.fresh_heap
    assert r.after_idle.hibernate_after <= r.fresh_heap
    # The plain server still holds the heap its heavy request grew (at least 10x more).
    assert r.after_idle.plain >= 10 * r.after_idle.hibernate
    assert Enum.all?(Map.values(r.rates), &(&1 > 0))

    # Where a hibernated gen_server waits depends on the VM: erlang:hibernate/3 (stack
    # discarded) up to OTP 27; from OTP 28 gen_server calls erlang:hibernate/0 and keeps it.
    for mode <- [:hibernate, :hibernate_after] do
      w = r.waiting[mode]

      if function_exported?(:erlang, :hibernate, 0) do
        assert w.function != {:erlang, :hibernate, 3} and w.stack_words > 1, inspect(w)
      else
        assert w.function == {:erlang, :hibernate, 3} and w.stack_words <= 1, inspect(w)
      end
    end

    refute r.waiting.plain.function == {:erlang, :hibernate, 3}

    # Hibernating after every message: one message at a time, a collection per call (the cast
    # before it finds the call waiting, so OTP 27 and earlier skip that one).
    [{1, one} | _] = r.backlog
    {largest, last} = List.last(r.backlog)
    assert largest >= 1_000
    assert one.hibernate.gcs_per_msg >= 0.45, inspect(r.backlog)

    if function_exported?(:erlang, :hibernate, 0) do
      # OTP 28+: a collection at every message, waiting messages or not.
      for {_, by_mode} <- r.backlog, do: assert(by_mode.hibernate.gcs_per_msg >= 0.9)
    else
      # Up to OTP 27: skipped while a message waits.
      assert last.hibernate.gcs_per_msg < 0.5, inspect(r.backlog)
    end

    text = IO.iodata_to_binary(Hibernate.render(r))
    assert text =~ "OTP #{r.otp}"
    assert File.exists?(r.chart) and File.read!(r.bars_chart) =~ "hibernate_after"
  end
end
