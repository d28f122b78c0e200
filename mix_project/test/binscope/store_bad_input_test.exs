defmodule Binscope.StoreBadInputTest do
  use Binscope.StoreCase, async: false

  import Bitwise

  defp dead_pid do
    pid = spawn(fn -> :ok end)
    ref = Process.monitor(pid)
    assert_receive {:DOWN, ^ref, :process, ^pid, _}
    pid
  end

  defp not_binaries, do: [nil, 1, 1.5, :atom, [1, 2], {:a}, %{}, <<1::3>>, self(), make_ref()]
  @bad_sizes [-1, 1 <<< 50, 1.0, "10", nil, :infinity, [1]]
  @bad_labels [1, 1.5, {:a}, [1], %{}, String.duplicate("x", 256), <<0xFF, 0xFE>>]
  @bad_fills [-1, 256, 1.0, "a", nil, :x]
  @bad_opts [
    [unknown: 1],
    [{:label, :a}, :not_a_pair],
    %{label: :a},
    :not_a_list,
    [{"label", :a}],
    [label: :a, owner: :me]
  ]

  # Every call must raise ArgumentError (with a message) and leave every counter untouched.
  defp assert_argument_error(fun) do
    before = Store.stats()
    error = assert_raise ArgumentError, fun
    assert Exception.message(error) =~ ~r/\S/
    assert Store.stats() == before
  end

  test "non-binaries are refused by put and intern" do
    for bad <- not_binaries() do
      assert_argument_error(fn -> Store.put(bad) end)
      assert_argument_error(fn -> Store.put!(bad) end)
      assert_argument_error(fn -> Store.intern(bad) end)
    end
  end

  test "negative, absurd and non-integer sizes are refused by alloc" do
    for bad <- @bad_sizes do
      assert_argument_error(fn -> Store.alloc(bad) end)
      assert_argument_error(fn -> Store.alloc!(bad) end)
    end
  end

  test "fills outside 0..255 are refused" do
    for bad <- @bad_fills, do: assert_argument_error(fn -> Store.alloc(10, fill: bad) end)
  end

  test "labels that are not atoms or short UTF-8 strings are refused" do
    for bad <- @bad_labels do
      assert_argument_error(fn -> Store.put("x", label: bad) end)
      assert_argument_error(fn -> Store.alloc(1, label: bad) end)
      assert_argument_error(fn -> Store.intern("x", label: bad) end)
      assert_argument_error(fn -> Store.live(label: bad) end)
    end
  end

  test "owners that are not local live pids are refused" do
    for bad <- [:me, "pid", 1, nil, make_ref(), dead_pid()] do
      assert_argument_error(fn -> Store.put("x", owner: bad) end)
      assert_argument_error(fn -> Store.alloc(1, owner: bad) end)
      assert_argument_error(fn -> Store.intern("x", owner: bad) end)
    end
  end

  test "a dead owner is refused even after it once owned binaries" do
    h = holder()
    owner = spawn(fn -> receive do: (:go -> send(h, {:keep, Store.put!("x")})) end)
    ref = Process.monitor(owner)
    send(owner, :go)
    assert_receive {:DOWN, ^ref, :process, ^owner, _}
    sync(h)
    assert eventually(fn -> Store.by_owner()[owner][:alive?] == false end)
    assert_argument_error(fn -> Store.put("y", owner: owner) end)
    stop(h)
  end

  test "unknown options and malformed option lists are refused" do
    for bad <- @bad_opts do
      assert_argument_error(fn -> Store.put("x", bad) end)
      assert_argument_error(fn -> Store.alloc(1, bad) end)
      assert_argument_error(fn -> Store.intern("x", bad) end)
      assert_argument_error(fn -> Store.live(bad) end)
    end

    assert_argument_error(fn -> Store.put("x", fill: 1) end)
  end

  test "live/1 refuses bad filter values" do
    for {key, bad} <- [older_than: -1, older_than: 1.5, limit: -3, limit: :all, owner: :x] do
      assert_argument_error(fn -> Store.live([{key, bad}]) end)
    end
  end

  # Issue 12, item 8: these raised the NIF's bare "argument error".
  test "numeric options past 64 bits name the option and its range" do
    for {call, option} <- [
          {fn -> Store.live(limit: 1 <<< 64) end, "limit"},
          {fn -> Store.live(older_than: 1 <<< 64) end, "older_than"},
          {fn -> Store.alloc(1 <<< 64) end, "size"},
          {fn -> Store.set_capacity(1 <<< 64) end, "capacity"}
        ] do
      e = assert_raise ArgumentError, call
      assert e.message =~ ~r/^Binscope\.Store\.\w+\/\d: #{option} must be .*\d+\.\.\d+/
    end

    assert is_list(Store.live(limit: (1 <<< 64) - 1, older_than: (1 <<< 64) - 1))
  end

  test "set_capacity refuses anything but a byte count or :infinity" do
    for bad <- [-1, 1.5, :unlimited, "1", nil, 1 <<< 64] do
      assert_argument_error(fn -> Store.set_capacity(bad) end)
    end
  end

  test "no atom is created from user input" do
    labels = for i <- 1..200, do: "label-#{i}-#{System.unique_integer([:positive])}"
    before = :erlang.system_info(:atom_count)

    in_process(fn ->
      for l <- labels, do: Store.put!("x", label: l)
      for l <- labels, do: _ = Store.live(label: l)
      _ = Store.by_label()
    end)

    assert :erlang.system_info(:atom_count) == before
  end

  test "the NIF itself raises ArgumentError for wrong types, never crashes" do
    native = Binscope.Native

    for {fun, args} <- [
          store_put: [1, :default, self()],
          store_put: ["x", 1, self()],
          store_put: ["x", :default, :not_pid],
          store_alloc: [-1, 0, :default, self()],
          store_alloc: [1, 256, :default, self()],
          store_alloc: [1 <<< 65, 0, :default, self()],
          store_intern: [[], :default, self()],
          store_live: [{1}, nil, nil, nil],
          store_live: [nil, nil, -1, nil],
          store_set_capacity: [-5]
        ] do
      assert_raise ArgumentError, fn -> apply(native, fun, args) end
    end

    # Sizes the Elixir layer would refuse still fail cleanly inside the NIF.
    assert {:error, :too_large} = native.store_alloc(1 <<< 50, 0, :default, self())
  end
end
