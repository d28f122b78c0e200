# The mixed node of issue 14, three times: unaccounted vs the old formula. MIX_ENV=test mix run ../scripts/memory_measure.exs
for i <- 1..3 do
  {:ok, m} = Binscope.MemoryScenario.run()
  mib = fn b -> Float.round(b / 1_048_576, 1) end
  IO.puts("run #{i} OTP #{System.otp_release()}: rss #{mib.(m.rss)} MiB, unaccounted #{m.unaccounted} B (#{Float.round(m.unaccounted_share * 100, 2)} %), old formula #{mib.(m.old_unaccounted)} MiB (#{Float.round(m.old_unaccounted / m.rss * 100, 1)} %), vm_resident #{mib.(m.vm_resident)}, vm_blocks #{mib.(m.vm_blocks)}, vm_mapped #{mib.(m.vm_mapped)}, native #{mib.(m.native_resident)}, binary_alloc free #{mib.(hd(m.allocators).free)}")
end
