# Elixir 1.14 only warns when @on_load fails at compile time: make a broken NIF fail the run.
Code.ensure_loaded!(Binscope.Native)
{:ok, _} = Binscope.Native.allocator_stats()

ExUnit.start(exclude: [:bench, :bench_scale, :soak, :cross_otp])
