%% The part of Binscope that runs on the node being inspected.
%%
%% It depends on OTP only, so Binscope can load it onto a node that does not have Binscope
%% installed (code:load_binary over erpc). It gathers compact data there; attribution and
%% reporting run on the calling node, in Rust.
%%
%% Costs and dangers:
%% - snapshot/1 calls process_info/2 once per process (one lock of each process, briefly).
%%   With basic detail it costs about as much as one sweep of process_info(P, [binary, memory]).
%%   Scans of many processes are split among short-lived worker processes (ordinary processes,
%%   normal priority), by default one per online scheduler but one (none on 2 schedulers).
%% - gc_round/2 FORCES a major garbage collection of every pid it is given (that is its purpose);
%%   each collection stops that process for as long as it takes to copy its live heap.
%% - Nothing here changes process flags, sends messages to the inspected processes or keeps state,
%%   except one persistent_term (the calibration of Binscope store binaries, when Binscope's NIF
%%   is loaded on the node).
-module(binscope_collector).

-export([snapshot/1, details/1, details/2, activity/1, node_memory/0, gc_round/1, gc_round/2,
         calibration/0, calibration_status/0, check_calibration/2]).
-export([allocators/0, kernel_memory/0, ets_tables/1, ets_binaries/1, applications/0, erlang/0]).
-export([queue_data/1]).
%% Exported for tests: the figures taken from garbage_collection and garbage_collection_info.
-export([gc_fields/2]).

-define(NATIVE, 'Elixir.Binscope.Native').
%% Bytes behind the calibration probe's resource binary (PROBE_BYTES in the NIF's collector.rs).
-define(PROBE_PAYLOAD, 1).
%% Process records (binscope_basic, binscope_process) and GC round results (binscope_gc) are
%% defined once, in binscope_collector.hrl, which Binscope's Elixir side reads too.
-include("binscope_collector.hrl").
%% The items of a full record (label_item/0 appends `label` where the VM has it).
%% Heap, stack and total heap sizes come from garbage_collection_info: every item costs (the
%% result is built on the collector's heap), so none is asked twice.
-define(ITEMS, [registered_name, initial_call, current_function, memory, message_queue_len,
                reductions, binary, garbage_collection, garbage_collection_info]).
%% detail => basic: what attribution and ranking need, the same two items as a plain
%% process_info(P, [binary, memory]) sweep (every item costs; the GC items above the most),
%% plus the label where the VM has it.
%% Registered names come from one registered/0 call instead.
-define(BASIC_ITEMS, [memory, binary]).
%% Deadlines. A scan or GC round given budget_ms => Ms (in its options) gives up once Ms have
%% passed on this node: it throws ?TIMEOUT, after killing and waiting for the processes it
%% started (none is left behind, none of their messages stays in the caller's mailbox). Scans
%% look at the clock every ?CHECK_EVERY processes; a GC round waits for each collection with the
%% time left and abandons it (the target's GC completes on its own; the helper that asked is
%% killed). Without budget_ms nothing is bounded here, as before.
-define(TIMEOUT, {binscope_collector, timeout}).
-define(CHECK_EVERY, 256).

%% Snapshot of processes: #{node, time_ms, word_size, store, workers, procs => [Record]}.
%% Opts: #{pids => all | [pid()], detail => full | basic, workers => auto | pos_integer(),
%%        budget_ms => non_neg_integer()}.
%% Processes that exit during the scan are skipped.
snapshot(Opts) ->
    Deadline = deadline(Opts),
    Detail = maps:get(detail, Opts, full),
    Label = label_item(),
    Scan = #{detail => Detail,
             items => case Detail of
                          basic -> ?BASIC_ITEMS ++ Label;
                          full -> ?ITEMS ++ Label
                      end,
             names => case Detail of
                          basic -> registered_names();
                          full -> #{}
                      end,
             calibration => calibration(),
             deadline => Deadline},
    WorkersOpt = maps:get(workers, Opts, auto),
    {Workers, Procs} =
        case maps:get(pids, Opts, all) of
            all ->
                whole_node(Scan, WorkersOpt);
            List when is_list(List) ->
                Pids = [P || P <- List, is_pid(P), node(P) =:= node()],
                W = workers(WorkersOpt, length(Pids)),
                {W, collect(Pids, Scan, W)}
        end,
    #{node => node(),
      time_ms => erlang:system_time(millisecond),
      word_size => erlang:system_info(wordsize),
      %% Whether the virtual binary heap charges NIF resource binaries their size: not from
      %% OTP 27 on (OTP issue 11611), so the caller cannot estimate other NIFs' native bytes.
      resource_vheap => list_to_integer(erlang:system_info(otp_release)) < 27,
      store => store_loaded(),
      store_resolution => case calibration_status() of
                              {ok, _} -> ok;
                              Other -> Other
                          end,
      workers => Workers,
      procs => Procs}.

%% [label] where process_info/2 has the item (OTP 27+), [] where it raises badarg. Checked once
%% per snapshot, on the collector itself, not per process.
label_item() ->
    try erlang:process_info(self(), label) of
        {label, _} -> [label];
        _ -> []
    catch
        error:badarg -> []
    end.

%% A whole-node scan. Split among workers on OTP 28+, it takes pids from the processes iterator:
%% the scanner then never holds the list of every pid next to the chunks split from it (the
%% caller keeps only the workers' chunks, for rescans). Measured at 200k processes on OTP 29
%% (basic detail, 2 workers): 21-23 MiB of heap in use against 27-29 MiB from the list; at full
%% detail, within the spread of runs. A single
%% scanner consumes the list as it builds records, which outweigh it (measured: the same heap in
%% use either way, and its heap blocks no smaller), so it keeps erlang:processes(), as do older
%% OTPs.
whole_node(Scan, WorkersOpt) ->
    Iterator = erlang:function_exported(erlang, processes_iterator, 0),
    case Iterator andalso workers(WorkersOpt, erlang:system_info(process_count)) of
        K when is_integer(K), K > 1 ->
            {K, collect_iter(erlang:processes_iterator(), Scan, K)};
        _ ->
            Pids = erlang:processes(),
            W = workers(WorkersOpt, length(Pids)),
            {W, collect(Pids, Scan, W)}
    end.

%% Scans of many processes can be split among worker processes. process_info/2 of another
%% process is a round trip (the target handles the request as a signal), so a single scanner
%% leaves its scheduler partly idle and several scan faster. workers => auto uses all online
%% schedulers but one: when every scheduler scanned (measured on 2 cores), the VM's own threads
%% (dirty GC, busy-waiting schedulers) had no core left and the OS preempted scanners in the
%% middle of their time slices: 2-5 ms long_schedule reports in up to 14 of 20 scans, none
%% with one scheduler left free. Below ?MIN_CHUNK pids per worker, splitting costs more than
%% it saves.
-define(MIN_CHUNK, 4000).
%% Workers send their records in pieces of this many processes: every send is one copy that
%% cannot be preempted, so pieces keep each one well under a millisecond.
-define(PIECE, 1000).

workers(auto, N) ->
    workers(erlang:system_info(schedulers_online) - 1, N);
workers(K, N) when is_integer(K) ->
    max(1, min(K, N div ?MIN_CHUNK)).

%% The caller scans the first chunk itself and the workers the others; records come back in
%% pid order. A worker that dies (killed from outside: process_info/2 does not raise here) has
%% its chunk rescanned by the caller.
collect(Pids, Scan, 1) ->
    scan(Pids, Scan);
collect(Pids, Scan, K) ->
    [Own | Chunks] = split(Pids, (length(Pids) + K - 1) div K, []),
    Parent = self(),
    Started = [start_worker(Parent, Chunk, Scan) || Chunk <- Chunks],
    try
        Mine = scan(Own, Scan),
        lists:append([Mine | [gather(W, Scan, []) || W <- Started]])
    catch
        throw:?TIMEOUT ->
            lists:foreach(fun stop_worker/1, Started),
            throw(?TIMEOUT)
    end.

%% Kills a worker, waits until it is gone (a fresh monitor: its first one may have fired or
%% been dropped already; a local process's messages are queued when sent, so all of them are
%% here before that DOWN) and drops its messages.
stop_worker({Tag, Pid, MRef, _Chunk}) ->
    exit(Pid, kill),
    Gone = erlang:monitor(process, Pid),
    receive {'DOWN', Gone, process, Pid, _} -> ok end,
    erlang:demonitor(MRef, [flush]),
    flush(Tag).

%% As collect/3, from a processes iterator: the workers get the first chunks (each pulled from
%% the iterator just before its worker starts) and the caller scans what is left straight from
%% the iterator, so records still come back in the iterator's order.
collect_iter(Iter, Scan, K) ->
    Size = (erlang:system_info(process_count) + K - 1) div K,
    Parent = self(),
    {Started, Rest} = start_iter_workers(Parent, Iter, Size, Scan, K - 1, []),
    try
        Mine = scan({iter, Rest}, Scan),
        lists:append([gather(W, Scan, []) || W <- Started] ++ [Mine])
    catch
        throw:?TIMEOUT ->
            lists:foreach(fun stop_worker/1, Started),
            throw(?TIMEOUT)
    end.

start_iter_workers(_Parent, Iter, _Size, _Scan, 0, Acc) ->
    {lists:reverse(Acc), Iter};
start_iter_workers(Parent, Iter, Size, Scan, N, Acc) ->
    case take_iter(Iter, Size, []) of
        {[], Rest} ->
            {lists:reverse(Acc), Rest};
        {Chunk, Rest} ->
            W = start_worker(Parent, Chunk, Scan),
            start_iter_workers(Parent, Rest, Size, Scan, N - 1, [W | Acc])
    end.

take_iter(none, _N, Acc) ->
    {lists:reverse(Acc), none};
take_iter(Iter, 0, Acc) ->
    {lists:reverse(Acc), Iter};
take_iter(Iter, N, Acc) ->
    case erlang:processes_next(Iter) of
        {P, Next} -> take_iter(Next, N - 1, [P | Acc]);
        none -> {lists:reverse(Acc), none}
    end.

start_worker(Parent, Chunk, Scan) ->
    Tag = make_ref(),
    {Pid, MRef} = spawn_opt(fun() -> send_pieces(Parent, Tag, Chunk, Scan) end, [monitor]),
    {Tag, Pid, MRef, Chunk}.

send_pieces(Parent, Tag, Pids, Scan) ->
    {Piece, Rest} = take(Pids, ?PIECE, []),
    try scan(Piece, Scan) of
        Records ->
            Parent ! {Tag, Records},
            case Rest of
                [] -> Parent ! {Tag, done};
                _ -> send_pieces(Parent, Tag, Rest, Scan)
            end
    catch
        throw:?TIMEOUT -> Parent ! {Tag, timeout}
    end.

gather({Tag, Pid, MRef, Chunk} = W, Scan, Acc) ->
    %% The clock, not only the receive's after: pieces keep arriving while a worker scans.
    check(maps:get(deadline, Scan)),
    receive
        {Tag, done} ->
            erlang:demonitor(MRef, [flush]),
            lists:append(lists:reverse(Acc));
        {Tag, timeout} ->
            throw(?TIMEOUT);
        {Tag, Records} ->
            gather(W, Scan, [Records | Acc]);
        {'DOWN', MRef, process, Pid, _} ->
            flush(Tag),
            scan(Chunk, Scan)
    after time_left(maps:get(deadline, Scan)) ->
            throw(?TIMEOUT)
    end.

flush(Tag) ->
    receive {Tag, _} -> flush(Tag) after 0 -> ok end.

split([], _Size, Acc) ->
    lists:reverse(Acc);
split(L, Size, Acc) ->
    {Chunk, Rest} = take(L, Size, []),
    split(Rest, Size, [Chunk | Acc]).

take([], _N, Acc) -> {lists:reverse(Acc), []};
take(L, 0, Acc) -> {lists:reverse(Acc), L};
take([H | T], N, Acc) -> take(T, N - 1, [H | Acc]).

%% One process's share of the scan (a list of pids, or {iter, Iterator} for the rest of a
%% processes iterator): its records, store binaries resolved. With a deadline, the clock is
%% read every ?CHECK_EVERY processes. The store's mark is read before the first process is
%% listed: resolution then trusts only store resources that lived through the whole listing (an
%% address freed and reused meanwhile is never credited to the process that listed the old
%% binary; it comes back as unresolved).
scan(Source, #{detail := full, items := Items, calibration := C} = Scan) ->
    Mark = mark(C),
    F = fun(P, Acc) -> full(P, Items, Acc) end,
    resolve_store(fold(Source, F, maps:get(deadline, Scan, infinity), ?CHECK_EVERY, []), C, Mark);
scan(Source, #{detail := basic, items := Items, names := Names, calibration := C} = Scan) ->
    Mark = mark(C),
    F = fun(P, Acc) -> basic(P, Items, Names, Acc) end,
    resolve_store(fold(Source, F, maps:get(deadline, Scan, infinity), ?CHECK_EVERY, []), C, Mark).

mark(undefined) -> undefined;
mark(_Calibration) -> ?NATIVE:collector_mark().

%% The records of every pid of Source, in its order.
fold(Source, F, Deadline, 0, Acc) ->
    check(Deadline),
    fold(Source, F, Deadline, ?CHECK_EVERY, Acc);
fold([], _F, _Deadline, _K, Acc) ->
    lists:reverse(Acc);
fold([P | Rest], F, Deadline, K, Acc) ->
    fold(Rest, F, Deadline, K - 1, F(P, Acc));
fold({iter, none}, _F, _Deadline, _K, Acc) ->
    lists:reverse(Acc);
fold({iter, Iter}, F, Deadline, K, Acc) ->
    case erlang:processes_next(Iter) of
        {P, Next} -> fold({iter, Next}, F, Deadline, K - 1, F(P, Acc));
        none -> lists:reverse(Acc)
    end.

deadline(#{budget_ms := Ms}) when is_integer(Ms), Ms >= 0 ->
    erlang:monotonic_time(millisecond) + Ms;
deadline(_) ->
    infinity.

time_left(infinity) -> infinity;
time_left(Deadline) -> max(Deadline - erlang:monotonic_time(millisecond), 0).

check(infinity) -> ok;
check(Deadline) ->
    case erlang:monotonic_time(millisecond) >= Deadline of
        true -> throw(?TIMEOUT);
        false -> ok
    end.

registered_names() ->
    maps:from_list([{P, N} || N <- erlang:registered(), P <- [erlang:whereis(N)], is_pid(P)]).

basic(P, Items, Names, Acc) ->
    case erlang:process_info(P, Items) of
        undefined ->
            Acc;
        [{memory, Mem}, {binary, Bins} | Label] ->
            [#binscope_basic{pid = P, binaries = Bins, listed_bytes = listed_bytes(Bins, 0),
                             registered_name = maps:get(P, Names, undefined),
                             label = label(Label), memory = Mem}
             | Acc]
    end.

full(P, Items, Acc) ->
    case erlang:process_info(P, Items) of
        undefined -> Acc;
        Info -> [record(P, Info) | Acc]
    end.

label([]) -> undefined;
label([{label, L}]) -> L.

record(P, [{registered_name, Name}, {initial_call, Init}, {current_function, Cur},
           {memory, Mem}, {message_queue_len, MQL}, {reductions, Reds}, {binary, Bins},
           {garbage_collection, GC}, {garbage_collection_info, GCI} | Label]) ->
    {{Minor, Fullsweep}, {OldBlock, Block, Mbuf, Stack, OldHeap, Heap, VHeap, OldVHeap}} =
        gc_fields(GC, GCI),
    %% The total heap is what process_info's total_heap_size reports: young and old heap blocks
    %% plus heap fragments.
    #binscope_process{pid = P, binaries = Bins, listed_bytes = listed_bytes(Bins, 0),
                      registered_name = name(Name), label = label(Label),
                      initial_call = initial_call(P, Init), current_function = Cur, memory = Mem,
                      total_heap_size = sum(OldBlock, Block, Mbuf), heap_size = Heap,
                      stack_size = Stack, message_queue_len = MQL, reductions = Reds,
                      minor_gcs = Minor, fullsweep_after = Fullsweep, bin_vheap_size = VHeap,
                      bin_old_vheap_size = OldVHeap, old_heap_size = OldHeap}.

%% {{MinorGCs, FullsweepAfter}, {OldHeapBlock, HeapBlock, Mbuf, Stack, OldHeap, Heap, BinVHeap,
%% BinOldVHeap}} from garbage_collection and garbage_collection_info; a key the list lacks is
%% undefined (unknown), never 0.
gc_fields(GC, GCI) ->
    {gc(GC), gc_info(GCI)}.

%% ERTS builds these lists in a fixed order. The fast path matches that order (a scan of 50k
%% processes spends real time in key lookups), checking the key of every figure it takes and
%% ignoring keys appended after them; any other list (keys moved, inserted, missing) is read
%% by key.
gc([_MaxHeap, _MinBinVHeap, _MinHeap, {fullsweep_after, F}, {minor_gcs, M} | _]) ->
    {M, F};
gc(GC) ->
    {key(minor_gcs, GC), key(fullsweep_after, GC)}.

gc_info([{old_heap_block_size, OB}, {heap_block_size, B}, {mbuf_size, MB}, {recent_size, _},
         {stack_size, S}, {old_heap_size, OH}, {heap_size, H}, {bin_vheap_size, V},
         {bin_vheap_block_size, _}, {bin_old_vheap_size, OV}, {bin_old_vheap_block_size, _}
         | _]) ->
    {OB, B, MB, S, OH, H, V, OV};
gc_info(GCI) ->
    {key(old_heap_block_size, GCI), key(heap_block_size, GCI), key(mbuf_size, GCI),
     key(stack_size, GCI), key(old_heap_size, GCI), key(heap_size, GCI),
     key(bin_vheap_size, GCI), key(bin_old_vheap_size, GCI)}.

key(K, List) ->
    case lists:keyfind(K, 1, List) of
        {K, V} -> V;
        false -> undefined
    end.

sum(A, B, C) when is_integer(A), is_integer(B), is_integer(C) -> A + B + C;
sum(_, _, _) -> undefined.

listed_bytes([], Acc) -> Acc;
listed_bytes([{_, Size, _} | T], Acc) -> listed_bytes(T, Acc + Size).

name([]) -> undefined;
name(N) -> N.

%% proc_lib processes all start in proc_lib:init_p/5; the real initial call is in their
%% dictionary (what proc_lib:translate_initial_call/1 reads). Only those pay for the lookup.
initial_call(P, {proc_lib, init_p, 5} = Init) ->
    case erlang:process_info(P, dictionary) of
        {dictionary, D} ->
            case lists:keyfind('$initial_call', 1, D) of
                {_, MFA} -> MFA;
                false -> Init
            end;
        undefined -> Init
    end;
initial_call(_P, Init) ->
    Init.

%% Store binaries: when Binscope's NIF is loaded here, rewrite their listed (magic binary)
%% address and 72-byte size into the store entry's key and real size.
resolve_store(Records, {Offset, MagicSize}, Mark) ->
    %% Only lists holding an entry of the probe's size can hold store binaries, unless store
    %% binaries list at their real size (GC pressure patch, OTP 27+).
    Any = store_sizes_patched(),
    case candidates(Records, MagicSize, Any, 1, [], []) of
        {[], []} -> Records;
        {Idx, Lists} ->
            Resolved = ?NATIVE:collector_resolve(Lists, Offset, MagicSize, Mark),
            replace(Records, 1, maps:from_list(lists:zip(Idx, Resolved)), [])
    end;
resolve_store(Records, undefined, _Mark) ->
    Records.

candidates([], _Size, _Any, _I, Idx, Lists) ->
    {lists:reverse(Idx), lists:reverse(Lists)};
candidates([R | Rest], Size, Any, I, Idx, Lists) ->
    Bins = binaries(R),
    case may_hold_store(Bins, Size, Any) of
        true -> candidates(Rest, Size, Any, I + 1, [I | Idx], [Bins | Lists]);
        false -> candidates(Rest, Size, Any, I + 1, Idx, Lists)
    end.

%% Only lists holding an entry of the probe's listed size (its magic binary's: 56 bytes on the
%% project's OTP 25, 27 and 29 builds) can hold store binaries, unless they may be listed at
%% their own size: under the GC pressure patch (Any), or where the VM itself lists resource
%% binaries at their payload's size (the probe listed at its ?PROBE_PAYLOAD bytes); then any
%% non-empty list may hold one, and the NIF matches sizes against the entries.
may_hold_store([], _Size, _Any) -> false;
may_hold_store(_Bins, _Size, true) -> true;
may_hold_store(_Bins, ?PROBE_PAYLOAD, _Any) -> true;
may_hold_store(Bins, Size, false) -> lists:keymember(Size, 2, Bins).

%% Whether store binaries may list at their real size here: Binscope.Store.GcPressure's patch
%% was calibrated on this node (binaries made while it was enabled keep their size).
store_sizes_patched() ->
    try element(1, ?NATIVE:gc_pressure_state())
    catch _:_ -> false
    end.

replace([], _I, _Resolved, Acc) ->
    lists:reverse(Acc);
replace([R | Rest], I, Resolved, Acc) ->
    case Resolved of
        #{I := Bins} -> replace(Rest, I + 1, Resolved, [binaries(R, Bins) | Acc]);
        _ -> replace(Rest, I + 1, Resolved, [R | Acc])
    end.

binaries(#binscope_basic{binaries = Bins}) -> Bins;
binaries(#binscope_process{binaries = Bins}) -> Bins.

binaries(#binscope_basic{} = R, Bins) -> R#binscope_basic{binaries = Bins};
binaries(#binscope_process{} = R, Bins) -> R#binscope_process{binaries = Bins}.

store_loaded() ->
    erlang:module_loaded(?NATIVE) andalso erlang:function_exported(?NATIVE, collector_probe, 0).

%% Store binaries are resolved only by a NIF that has the handle mark (an older one on a remote
%% node could credit a reused address to the wrong process): without it they stay as listed.
resolvable() ->
    store_loaded() andalso erlang:function_exported(?NATIVE, collector_mark, 0).

%% {Offset, MagicSize} or undefined. A fresh process holding two probe resource binaries shows
%% their listed addresses and sizes; the NIF returned the resources' own addresses. The
%% calibration checks itself: both probes must sit at the same distance from their listed
%% magic binaries, with the same listed size, or store binaries are not resolved at all (and
%% calibration_status/0 says why) rather than resolved wrongly.
calibration() ->
    case calibration_status() of
        {ok, C} -> C;
        _ -> undefined
    end.

%% {ok, {Offset, MagicSize}} | {error, Reason} | not_loaded, cached once it succeeded.
calibration_status() ->
    case resolvable() of
        false -> not_loaded;
        true ->
            Key = {?MODULE, calibration},
            case persistent_term:get(Key, none) of
                none ->
                    Status = calibrate(),
                    case Status of
                        {ok, C} -> persistent_term:put(Key, C);
                        _ -> ok
                    end,
                    Status;
                C -> {ok, C}
            end
    end.

calibrate() ->
    Parent = self(),
    Ref = make_ref(),
    {Pid, MRef} =
        spawn_monitor(fun() ->
                              {Bin1, Addr1} = ?NATIVE:collector_probe(),
                              {Bin2, Addr2} = ?NATIVE:collector_probe(),
                              {binary, Listed} = erlang:process_info(self(), binary),
                              Parent ! {Ref, Listed, [Addr1, Addr2]},
                              byte_size(Bin1) + byte_size(Bin2)
                      end),
    receive
        {Ref, Listed, Addrs} ->
            erlang:demonitor(MRef, [flush]),
            check_calibration(Listed, Addrs);
        {'DOWN', MRef, process, Pid, Reason} ->
            {error, {probe_died, Reason}}
    after 5000 ->
            exit(Pid, kill),
            {error, probe_timeout}
    end.

%% Each probe object's header is the nearest listed binary below it (within 256 bytes: another
%% probe allocated just before it may be listed within reach too); both must sit at the same
%% distance and be listed at the same size.
check_calibration(Listed, Addrs) ->
    Pairs = [nearest_below(Obj, Listed) || Obj <- Addrs],
    case Pairs of
        [{ok, C}, {ok, C}] -> {ok, C};
        _ -> {error, {calibration_mismatch, length(Listed), Pairs}}
    end.

nearest_below(Obj, Listed) ->
    case lists:sort([{Obj - L, Size} || {L, Size, _} <- Listed, L < Obj, Obj - L =< 256]) of
        [C | _] -> {ok, C};
        [] -> none
    end.

%% Full records (as snapshot/1 with full detail) for a few pids, e.g. leak candidates.
details(Pids) ->
    snapshot(#{pids => Pids, detail => full}).

%% details/1 with options: budget_ms.
details(Pids, Opts) ->
    snapshot(maps:merge(maps:with([budget_ms], Opts), #{pids => Pids, detail => full})).

%% [{Pid, Reductions, MessageQueueLen}] for a few pids (a second sample of leak candidates, to
%% tell idle ones from running ones); a pid that is gone is left out.
activity(Pids) ->
    [{P, R, Q} || P <- Pids, is_pid(P), node(P) =:= node(),
                  [{reductions, R}, {message_queue_len, Q}] <-
                      [erlang:process_info(P, [reductions, message_queue_len])]].

%% [{Pid, on_heap | off_heap}] for a few pids: where each keeps its message queue. Messages
%% queued off the heap are not in process_info(Pid, binary) until the process receives them.
%% A pid that is gone is left out.
queue_data(Pids) ->
    [{P, D} || P <- Pids, is_pid(P), node(P) =:= node(),
               {message_queue_data, D} <- [erlang:process_info(P, message_queue_data)]].

%% The node's memory: erlang:memory/0, OS RSS, and Binscope's store and allocator when loaded.
node_memory() ->
    #{node => node(),
      erlang => maps:from_list(erlang:memory()),
      rss => rss(),
      store => call_native(store_stats, []),
      allocator => case call_native(allocator_stats, []) of
                       {ok, A} -> A;
                       Other -> Other
                   end,
      vm_allocators => allocators(),
      kernel => kernel_memory()}.

call_native(F, Args) ->
    case store_loaded() of
        true -> apply(?NATIVE, F, Args);
        false -> not_loaded
    end.

%% Resident set size in bytes from /proc (Linux); unavailable elsewhere.
rss() ->
    case file:read_file("/proc/self/status") of
        {ok, Status} ->
            case re:run(Status, <<"VmRSS:\\s+([0-9]+) kB">>, [{capture, all_but_first, binary}]) of
                {match, [Kb]} -> binary_to_integer(Kb) * 1024;
                nomatch -> unavailable
            end;
        {error, _} ->
            unavailable
    end.

%% Forces a major GC of each pid, one at a time, and lists its binaries before and after.
%% Returns #{results => [#binscope_gc{}], live_store_keys => [Key], gc_us => Total}; a pid
%% that is gone is left out.
gc_round(Pids) ->
    gc_round(Pids, #{}).

%% gc_round/1 with options: budget_ms. With a budget, a helper process does the collections and
%% sends each result as it goes; this process waits with the time left, and when it runs out,
%% kills the helper (a collection already asked for completes in its target; nothing else is
%% touched) and throws ?TIMEOUT.
gc_round(Pids, Opts) ->
    Deadline = deadline(Opts),
    %% Whether store binaries may list at their real size, read once for the round.
    Calibration = {calibration(), store_sizes_patched()},
    Local = [P || P <- Pids, is_pid(P), node(P) =:= node()],
    T0 = erlang:monotonic_time(microsecond),
    Results = case Deadline of
                  infinity -> lists:filtermap(fun(P) -> gc_one(P, Calibration) end, Local);
                  _ -> timed_gc(Local, Calibration, Deadline)
              end,
    T1 = erlang:monotonic_time(microsecond),
    %% Store keys are 1 bsl 62 + entry id; unresolved binaries (1 bsl 63 + address) are not.
    StoreKeys = lists:usort([K || #binscope_gc{binaries_before = Bins} <- Results, {K, _, _} <- Bins,
                                  K >= (1 bsl 62), K < (1 bsl 63)]),
    Live = case StoreKeys of
               [] -> [];
               _ -> ?NATIVE:collector_live_store_keys(StoreKeys)
           end,
    #{results => Results, live_store_keys => Live, gc_us => T1 - T0}.

timed_gc(Pids, Calibration, Deadline) ->
    Parent = self(),
    Tag = make_ref(),
    {Pid, MRef} =
        spawn_opt(fun() ->
                          lists:foreach(fun(P) -> Parent ! {Tag, gc_one(P, Calibration)} end, Pids),
                          Parent ! {Tag, done}
                  end, [monitor]),
    W = {Tag, Pid, MRef, Pids},
    try gc_results(W, Deadline, [])
    catch
        throw:?TIMEOUT ->
            stop_worker(W),
            throw(?TIMEOUT)
    end.

gc_results({Tag, Pid, MRef, _} = W, Deadline, Acc) ->
    check(Deadline),
    receive
        {Tag, done} ->
            erlang:demonitor(MRef, [flush]),
            lists:reverse(Acc);
        {Tag, false} ->
            gc_results(W, Deadline, Acc);
        {Tag, {true, R}} ->
            gc_results(W, Deadline, [R | Acc]);
        {'DOWN', MRef, process, Pid, Reason} ->
            flush(Tag),
            error({gc_helper_died, Reason})
    after time_left(Deadline) ->
            throw(?TIMEOUT)
    end.

%% The before list is resolved before the collection: a store resource the GC frees leaves the
%% NIF's index with it, and could no longer be told apart from any other small binary.
gc_one(P, {C, _Any} = Calibration) ->
    Mark = mark(C),
    case erlang:process_info(P, [binary, reductions]) of
        undefined ->
            false;
        [{binary, Before}, {reductions, Reds}] ->
            Resolved = resolve_one(Before, Calibration, Mark),
            case erlang:garbage_collect(P) of
                false ->
                    false;
                true ->
                    MarkAfter = mark(C),
                    case erlang:process_info(P, [binary, total_heap_size, stack_size, message_queue_len]) of
                        undefined ->
                            false;
                        [{binary, After}, {total_heap_size, H}, {stack_size, S}, {message_queue_len, Q}] ->
                            {true, #binscope_gc{pid = P, binaries_before = Resolved,
                                                binaries_after = resolve_one(After, Calibration, MarkAfter),
                                                reductions = Reds, total_heap_size = H,
                                                stack_size = S, message_queue_len = Q}}
                    end
            end
    end.

resolve_one(Bins, {{Offset, MagicSize}, Any}, Mark) ->
    case may_hold_store(Bins, MagicSize, Any) of
        true -> hd(?NATIVE:collector_resolve([Bins], Offset, MagicSize, Mark));
        false -> Bins
    end;
resolve_one(Bins, {undefined, _Any}, _Mark) ->
    Bins.

%% The VM's allocators, summed over each type's instances, in bytes:
%% #{carriers => #{Alloc => #{mbcs | mbcs_pool | sbcs => {CarrierBytes, BlockBytes, Carriers},
%%                            sys_alloc => CarrierBytes}},
%%   mseg_segments => Bytes, erts_mmap => Bytes, literal_mmap => Bytes, cost_us => Us}.
%% Carrier bytes are address space an allocator got from mseg_alloc (mmap) or sys_alloc
%% (malloc); block bytes are what is allocated in them; sys_alloc is the part of the carrier
%% bytes that came from malloc. Only current figures are read.
%% Cost: one system_info({allocator, A}) per alloc_util type (about ten): each takes every
%% instance's lock briefly, and instances owned by schedulers answer on their own scheduler.
%% Like recon_alloc's reads, each read starts a new "max since last call" period for that
%% allocator (the middle figure of its size tuples, measured on OTP 25 and 29): a tool that
%% watches those figures sees a fresh period after Binscope's read. "Max ever" is untouched.
allocators() ->
    T0 = erlang:monotonic_time(microsecond),
    Types = try erlang:system_info(alloc_util_allocators) catch error:badarg -> [] end,
    Carriers = maps:from_list([{A, allocator_info(A)} || A <- Types]),
    Mseg = try lists:sum([segments_size(P) || {instance, _, P} <- erlang:system_info({allocator, mseg_alloc})])
           catch _:_ -> unavailable end,
    {Default, Literal} = erts_mmap(),
    #{carriers => Carriers, mseg_segments => Mseg, erts_mmap => Default, literal_mmap => Literal,
      cost_us => erlang:monotonic_time(microsecond) - T0}.

allocator_info(A) ->
    Zero = #{mbcs => {0, 0, 0}, mbcs_pool => {0, 0, 0}, sbcs => {0, 0, 0}, sys_alloc => 0},
    case erlang:system_info({allocator, A}) of
        Instances when is_list(Instances) ->
            lists:foldl(fun({instance, _, Props}, Acc) -> add_instance(Props, Acc);
                           (_, Acc) -> Acc
                        end, Zero, Instances);
        _ ->
            Zero
    end.

add_instance(Props, Acc) ->
    lists:foldl(fun(K, A) ->
                        L = proplists:get_value(K, Props, []),
                        {C, B, N} = carrier_figures(L),
                        {C0, B0, N0} = maps:get(K, A),
                        A#{K := {C0 + C, B0 + B, N0 + N},
                           sys_alloc := maps:get(sys_alloc, A) + current(sys_alloc_carriers_size, L)}
                end, Acc, [mbcs, mbcs_pool, sbcs]).

%% {CarrierBytes, BlockBytes, Carriers}, current values. OTP 23+ lists blocks per allocation
%% type ({blocks, [{Type, [{count, ..}, {size, Cur, _, _}]}]}: a migrated carrier can hold other
%% types' blocks), older releases {blocks_size, Cur, _, _}; pool entries carry current values only.
carrier_figures(L) ->
    B = case lists:keyfind(blocks, 1, L) of
            {blocks, PerType} when is_list(PerType) ->
                lists:sum([current(size, Figs) || {_, Figs} <- PerType]);
            _ ->
                current(blocks_size, L)
        end,
    {current(carriers_size, L), B, current(carriers, L)}.

current(K, L) ->
    case lists:keyfind(K, 1, L) of
        {K, Cur} when is_integer(Cur) -> Cur;
        {K, Cur, _, _} when is_integer(Cur) -> Cur;
        _ -> 0
    end.

segments_size(Props) ->
    Status = proplists:get_value(status, proplists:get_value(memkind, Props, []), []),
    case lists:keyfind(segments_size, 1, Status) of
        {segments_size, Cur, _, _} -> Cur;
        _ -> 0
    end.

%% Bytes mapped from the OS by ERTS's own mmap layer: the default mapper (every mseg_alloc
%% segment, cached ones included) and the literal mapper (literal_alloc's carriers, in a
%% reserved range of which only the used part counts).
erts_mmap() ->
    try erlang:system_info({allocator, erts_mmap}) of
        L when is_list(L) -> {mmap_used(proplists:get_value(default_mmap, L)),
                              mmap_used(proplists:get_value(literal_mmap, L))};
        _ -> {unavailable, unavailable}
    catch _:_ -> {unavailable, unavailable}
    end.

mmap_used(undefined) ->
    unavailable;
mmap_used(Props) ->
    Sizes = fun(K) -> proplists:get_value(sizes, proplists:get_value(K, Props, []), []) end,
    Os = proplists:get_value(used, Sizes(os), 0),
    Sc = proplists:get_value(used, Sizes(supercarrier), 0),
    Os + Sc.

%% What the kernel says about this OS process (Linux /proc/self/status), in bytes: VmRSS,
%% RssAnon, RssFile, RssShmem, VmSwap, VmSize, plus Threads (a count); unavailable elsewhere.
%% Cost: one read of a small file; the kernel keeps these counters, no page table is walked.
kernel_memory() ->
    case file:read_file("/proc/self/status") of
        {ok, Status} ->
            Lines = binary:split(Status, <<"\n">>, [global]),
            maps:from_list([kernel_field(K, V) || L <- Lines,
                                                  {match, [K, V]} <- [re:run(L, <<"^(Vm[A-Za-z]+|Rss[A-Za-z]+|Threads):\\s+([0-9]+)">>,
                                                                             [{capture, all_but_first, binary}])]]);
        {error, _} ->
            unavailable
    end.

kernel_field(<<"Threads">> = K, V) -> {K, binary_to_integer(V)};
kernel_field(K, V) -> {K, binary_to_integer(V) * 1024}.

%% The Limit largest ETS tables by memory: [{Id, Name, Owner, OwnerName, Type, Size, Bytes}].
%% Cost: one ets:info(T, memory) per table (a counter read; no table is scanned or locked for
%% long), then name, owner, type and size for the Limit largest, and one process_info of each
%% of their owners. A table deleted meanwhile is left out.
ets_tables(Limit) ->
    W = erlang:system_info(wordsize),
    Info = [{T, M} || T <- ets:all(), M <- [ets:info(T, memory)], is_integer(M)],
    Top = lists:sublist(lists:reverse(lists:keysort(2, Info)), Limit),
    [{T, Name, Owner, owner_name(Owner), Type, Size, M * W}
     || {T, M} <- Top,
        [Name, Owner, Type, Size] <- [[ets:info(T, K) || K <- [name, owner, type, size]]],
        Name =/= undefined].

%% The refc binaries each readable ETS table references: [{Table, Name, Status, [{Addr, Size}]}],
%% Status complete | partial (stopped at max_objects) | private (unreadable by another process)
%% | gone | timeout. A fresh worker per table copies its objects in chunks of ?ETS_CHUNK
%% (ets:select/3 with a limit: each call is short) and lists the off-heap binaries the copies
%% reference with process_info(self(), binary): a copy refers to the same binary, so the
%% addresses are the VM's own. The worker collects its heap after each chunk, so it never holds
%% more than one chunk. Cost: a copy of every object read (bounded by max_objects per table)
%% plus one process_info/2 per chunk; dangerous only for tables of huge objects.
-define(ETS_CHUNK, 500).
ets_binaries(Opts) ->
    Deadline = deadline(Opts),
    Max = maps:get(max_objects, Opts, 100000),
    W = erlang:system_info(wordsize),
    [ets_binaries_of(T, Max, Deadline) || T <- ets:all(), is_integer(ets:info(T, memory)),
                                            ets:info(T, memory) * W > 0].

ets_binaries_of(T, Max, Deadline) ->
    Name = ets:info(T, name),
    case ets:info(T, protection) of
        private -> {T, Name, private, []};
        undefined -> {T, Name, gone, []};
        _ ->
            Parent = self(),
            Tag = make_ref(),
            {Pid, MRef} = spawn_monitor(fun() -> Parent ! {Tag, read_table(T, Max)} end),
            receive
                {Tag, {Status, Bins}} ->
                    erlang:demonitor(MRef, [flush]),
                    {T, Name, Status, Bins};
                {'DOWN', MRef, process, Pid, _} ->
                    {T, Name, gone, []}
            after time_left(Deadline) ->
                    exit(Pid, kill),
                    receive {'DOWN', MRef, process, Pid, _} -> ok end,
                    flush(Tag),
                    {T, Name, timeout, []}
            end
    end.

read_table(T, Max) ->
    try ets:select(T, [{'_', [], ['$_']}], min(?ETS_CHUNK, Max)) of
        '$end_of_table' -> {complete, []};
        {Objects, Cont} -> read_chunks(Objects, Cont, Max, #{})
    catch error:badarg -> {gone, []}
    end.

read_chunks(Objects, Cont, Left, Seen0) ->
    Seen = listed_binaries(Seen0),
    Left1 = Left - length(Objects),
    case Cont of
        '$end_of_table' -> {complete, maps:to_list(Seen)};
        _ when Left1 =< 0 -> {partial, maps:to_list(Seen)};
        _ ->
            Next = try ets:select(Cont) catch error:badarg -> gone end,
            erlang:garbage_collect(),
            case Next of
                '$end_of_table' -> {complete, maps:to_list(Seen)};
                gone -> {partial, maps:to_list(Seen)};
                {More, Cont1} -> read_chunks(More, Cont1, Left1, Seen)
            end
    end.

listed_binaries(Seen) ->
    {binary, Bins} = erlang:process_info(self(), binary),
    lists:foldl(fun({Addr, Size, _Refc}, Acc) -> Acc#{Addr => Size} end, Seen, Bins).

owner_name(Owner) when is_pid(Owner) ->
    case erlang:process_info(Owner, registered_name) of
        {registered_name, N} -> N;
        _ -> undefined
    end;
owner_name(_) ->
    undefined.

%% Which application each process belongs to, by its group leader (as application:get_application/1
%% decides): #{masters => [{MasterPid, App}], leaders => [{Pid, GroupLeader}]}.
%% Cost: one process_info(P, group_leader) per process (like a basic scan item) and one read of
%% application_controller's table.
applications() ->
    Masters = try ets:match(ac_tab, {{application_master, '$1'}, '$2'}) of
                  L -> [{Pid, App} || [App, Pid] <- L, is_pid(Pid)]
              catch error:badarg -> []
              end,
    Leaders = [{P, GL} || P <- erlang:processes(),
                          {group_leader, GL} <- [erlang:process_info(P, group_leader)]],
    #{masters => Masters, leaders => Leaders}.

%% erlang:memory(binary): the bytes of every refc binary on the node (a counter read).
erlang() ->
    erlang:memory(binary).
