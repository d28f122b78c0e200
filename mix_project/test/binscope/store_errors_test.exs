defmodule Binscope.StoreErrorsTest do
  # Issue 13, the store's error surface: every reason and limit is the native code's, stated
  # once; caller errors raise ArgumentError, run-time refusals are {:error, reason}.
  use Binscope.StoreCase, async: false

  import Bitwise

  test "limits and reasons come from the native code" do
    l = Store.limits()
    assert l == Binscope.Native.store_limits()
    assert l.max_binary_size == 1 <<< 40
    assert l.max_label_bytes == 255
    assert l.max_labels in [1_024, 65_536]
    assert l.copy_first_max > 0
    assert l.caller_errors == [:too_large, :label_too_long, :dead_owner]

    assert l.errors ==
             [:capacity, :alloc_failed, :too_large, :label_too_long, :label_limit, :cancelled] ++
               [:dead_owner]
  end

  test "the documented reason type lists exactly the native run-time reasons" do
    {:ok, types} = Code.Typespec.fetch_types(Binscope.Store)

    [ast] = for {:type, {:reason, ast, []}} <- types, do: ast

    documented = union_atoms(ast) |> Enum.sort()
    l = Store.limits()
    assert documented == Enum.sort(l.errors -- l.caller_errors)
  end

  defp union_atoms({:type, _, :union, members}), do: Enum.flat_map(members, &union_atoms/1)
  defp union_atoms({:atom, _, a}), do: [a]

  test "caller errors raise ArgumentError naming the function; refusals are Binscope.Error" do
    too_long = String.duplicate("x", Store.limits().max_label_bytes + 1)
    long_atom = String.to_atom(String.duplicate("é", 200))

    assert_raise ArgumentError, ~r/Binscope.Store.put\/2: label_too_long/, fn ->
      Store.put("x", label: long_atom)
    end

    assert_raise ArgumentError, ~r/at most 255 bytes/, fn -> Store.put("x", label: too_long) end

    assert_raise ArgumentError, ~r/0\.\.#{1 <<< 40}/, fn -> Store.alloc((1 <<< 40) + 1) end

    # The native code's own too_large (past the Elixir check) is a caller error too.
    assert {:error, :too_large} = Binscope.Native.store_alloc((1 <<< 40) + 1, 0, :default, self())

    for reason <- Store.limits().caller_errors do
      refute Binscope.Error.exception(reason).message =~ "store refused",
             "#{reason} is raised as ArgumentError, never as a store refusal"
    end

    for reason <- Store.limits().errors -- Store.limits().caller_errors do
      assert Binscope.Error.exception(reason).message =~ "store refused"
    end
  end

  test "atom labels are told apart whatever the label cache holds" do
    # More distinct atoms than the cache has slots, twice over: every label is counted under its
    # own name (a cache slot taken by another atom must never answer for this one).
    labels = for i <- 1..600, do: String.to_atom("errors_test_label_#{i}")

    held =
      for _ <- 1..2, l <- labels do
        Store.put!("ab", label: l)
      end

    by_label = Store.by_label()

    for l <- labels do
      assert %{count: 2, bytes: 4} = by_label[l]
    end

    assert length(held) == 1_200
  end
end
