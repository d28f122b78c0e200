defmodule Binscope.Render.JSONTest do
  use ExUnit.Case, async: true

  alias Binscope.Render.JSON

  test "object keys come out sorted, whatever the VM's map order" do
    # Over 32 keys: a hash map, iterated in hash order on every OTP release.
    keys = for i <- 1..40, do: "k#{String.pad_leading(Integer.to_string(i), 2, "0")}"
    big = Map.new(keys, &{&1, 1})
    # The test means something only if the VM's own order is not the sorted one.
    refute Map.keys(big) == keys
    expected = "{" <> Enum.map_join(keys, ",", &~s("#{&1}":1)) <> "}"
    assert JSON.encode(big) == expected

    # Atom keys of a small map: OTP 26+ iterates them by atom index, not alphabetically.
    small = %{zeta_key_json_test: 1, alpha_key_json_test: 2, mid_key_json_test: 3}

    assert JSON.encode(small) ==
             ~s({"alpha_key_json_test":2,"mid_key_json_test":3,"zeta_key_json_test":1})

    assert JSON.encode(%{nested: %{b: 1, a: [%{d: 1, c: 2}]}}) ==
             ~s({"nested":{"a":[{"c":2,"d":1}],"b":1}})
  end
end
