defmodule Binscope.ScannerTest do
  # leaks/1 and top/2 scan in a process of their own (Binscope.Scanner): the caller's heap
  # never holds the scan. processes/1 returns every record, so it scans in the caller: the
  # control that shows the check can fail.
  use ExUnit.Case, async: false

  alias Binscope.LeakScenario, as: S

  @procs 20_000

  defp heap_words, do: elem(Process.info(self(), :total_heap_size), 1)

  test "leaks/1 and top/2 leave the caller's heap as it was; processes/1 grows it" do
    idle = S.idle_processes(@procs)

    try do
      :erlang.garbage_collect()
      small = heap_words()

      for call <- [
            fn -> Binscope.leaks(mode: :dry_run) end,
            fn -> Binscope.leaks() end,
            fn -> Binscope.top(3, by: :binary_pss) end,
            fn -> Binscope.top(3, detail: :basic) end
          ] do
        assert {:ok, [_ | _]} = call.()
        # A scan of 20k processes in the caller reserves 80-160 words per process on its heap
        # (Binscope.Accounting.Heap): well over a million words.
        assert heap_words() < small + 100_000, "caller heap: #{small} -> #{heap_words()} words"
      end

      {:ok, records} = Binscope.processes(detail: :basic)
      assert length(records) >= @procs
      assert heap_words() > small + 20 * @procs
    after
      S.stop_all(idle)
    end
  end

  test "a scanner's raise, throw and exit reach the caller as they were" do
    assert_raise ArgumentError, "boom", fn ->
      Binscope.Scanner.run(fn -> raise ArgumentError, "boom" end)
    end

    assert catch_throw(Binscope.Scanner.run(fn -> throw(:thrown) end)) == :thrown
    assert catch_exit(Binscope.Scanner.run(fn -> exit(:gone) end)) == :gone
    assert Binscope.Scanner.run(fn -> self() end) != self()
  end
end
