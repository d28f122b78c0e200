%% The records the collector (binscope_collector) sends to the calling node: their one
%% definition. Binscope's Elixir side reads them with Record.extract/2 (Binscope.Collector), and
%% the attribution NIF is told the index of the binary list by it, so no layout is written twice.
%% A collector loaded onto a node without Binscope carries them in its abstract code.

%% One process of a snapshot with detail => basic: what attribution and ranking need.
%% binaries: [{Address, Size, Refc}] as process_info(P, binary) lists them, store binaries
%% resolved to {StoreKey, RealSize, Refc} (binscope_collector:resolve_store/3); listed_bytes:
%% the VM's own sum of those sizes (store binaries at their listed size); registered_name from
%% erlang:registered/0; label: proc_lib:set_label/1's (OTP 27+), undefined when unset or older.
%% reductions: only when the snapshot was asked for them (reductions => true: a leak scan's
%% first activity sample), undefined otherwise.
-record(binscope_basic, {pid, binaries, listed_bytes, registered_name, label, memory,
                         reductions}).

%% One process of a snapshot with detail => full: the basic fields (pid, binaries and
%% listed_bytes at the same positions), then process_info/2's and the GC figures, heap and
%% binary heap sizes in words; a GC figure the VM's list lacked is undefined (unknown).
-record(binscope_process, {pid, binaries, listed_bytes, registered_name, label, initial_call,
                           current_function, memory, total_heap_size, heap_size, stack_size,
                           message_queue_len, reductions, minor_gcs, fullsweep_after,
                           bin_vheap_size, bin_old_vheap_size, old_heap_size}).

%% A share of a snapshot with compact => true (binscope_collector_compact; basic detail, on the
%% node that attributes it): acc, the NIF's scan (each process's memory, reductions, listed
%% bytes and binary references); pids, in the scan's order; pending, [{Index, Bins}] (0-based,
%% ascending) of the processes whose list the NIF did not take, store binaries resolved;
%% labels, [{Index, Label}] of the processes that have one; reductions, whether they were read.
-record(binscope_scan, {acc, pids, pending, labels, reductions}).

%% One process of a GC round (binscope_collector:gc_round/2): its binary lists before and after
%% a forced major collection (store binaries resolved, as in a snapshot), its reductions before
%% it, and its total heap size, stack size (words) and message queue length after it.
-record(binscope_gc, {pid, binaries_before, binaries_after, reductions, total_heap_size,
                      stack_size, message_queue_len}).

%% Shared by the collector's modules (not part of what it sends, except the timeout a call
%% throws, which Binscope.Remote turns into {error, timeout}).
-define(NATIVE, 'Elixir.Binscope.Native').
-define(TIMEOUT, {binscope_collector, timeout}).
