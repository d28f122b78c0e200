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

-export([snapshot/1, details/1, activity/1, node_memory/0, gc_round/1, calibration/0]).

-define(NATIVE, 'Elixir.Binscope.Native').
%% Bytes behind the calibration probe's resource binary (PROBE_BYTES in the NIF's accounting.rs).
-define(PROBE_PAYLOAD, 1).
%% Process records are tuples that start {Pid, Binaries, ListedBytes, ...}: the binary list
%% (resolve_store/2 rewrites it; the attribution NIF reads it in place) and what the VM itself
%% reports for it (store binaries at their listed size). Basic detail adds {Name, Memory}; full
%% detail the fields of record/2, in the order Binscope's Elixir side reads them.
-define(BINS, 2).
%% The items of a full record.
%% Heap, stack and total heap sizes come from garbage_collection_info: every item costs (the
%% result is built on the collector's heap), so none is asked twice.
-define(ITEMS, [registered_name, initial_call, current_function, memory, message_queue_len,
                reductions, binary, garbage_collection, garbage_collection_info]).
%% detail => basic: what attribution and ranking need, the same two items as a plain
%% process_info(P, [binary, memory]) sweep (every item costs; the GC items above the most).
%% Registered names come from one registered/0 call instead.
-define(BASIC_ITEMS, [memory, binary]).

%% Snapshot of processes: #{node, time_ms, word_size, store, workers, procs => [Record]}.
%% Opts: #{pids => all | [pid()], detail => full | basic, workers => auto | pos_integer()}.
%% Processes that exit during the scan are skipped.
snapshot(Opts) ->
    Pids = case maps:get(pids, Opts, all) of
               all -> erlang:processes();
               List when is_list(List) -> [P || P <- List, is_pid(P), node(P) =:= node()]
           end,
    Detail = maps:get(detail, Opts, full),
    Scan = #{detail => Detail,
             names => case Detail of
                          basic -> registered_names();
                          full -> #{}
                      end,
             calibration => calibration()},
    Workers = workers(maps:get(workers, Opts, auto), length(Pids)),
    #{node => node(),
      time_ms => erlang:system_time(millisecond),
      word_size => erlang:system_info(wordsize),
      store => store_loaded(),
      workers => Workers,
      procs => collect(Pids, Scan, Workers)}.

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
    Mine = scan(Own, Scan),
    lists:append([Mine | [gather(W, Scan, []) || W <- Started]]).

start_worker(Parent, Chunk, Scan) ->
    Tag = make_ref(),
    {Pid, MRef} = spawn_opt(fun() -> send_pieces(Parent, Tag, Chunk, Scan) end, [monitor]),
    {Tag, Pid, MRef, Chunk}.

send_pieces(Parent, Tag, Pids, Scan) ->
    {Piece, Rest} = take(Pids, ?PIECE, []),
    Parent ! {Tag, scan(Piece, Scan)},
    case Rest of
        [] -> Parent ! {Tag, done};
        _ -> send_pieces(Parent, Tag, Rest, Scan)
    end.

gather({Tag, Pid, MRef, Chunk} = W, Scan, Acc) ->
    receive
        {Tag, done} ->
            erlang:demonitor(MRef, [flush]),
            lists:append(lists:reverse(Acc));
        {Tag, Records} ->
            gather(W, Scan, [Records | Acc]);
        {'DOWN', MRef, process, Pid, _} ->
            flush(Tag),
            scan(Chunk, Scan)
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

%% One process's share of the scan: its records, store binaries resolved. The store's mark is
%% read before the first process is listed: resolution then trusts only store resources that
%% lived through the whole listing (an address freed and reused meanwhile is never credited to
%% the process that listed the old binary; it comes back as unresolved).
scan(Pids, #{detail := full, calibration := C}) ->
    Mark = mark(C),
    resolve_store(collect_full(Pids, []), C, Mark);
scan(Pids, #{detail := basic, names := Names, calibration := C}) ->
    Mark = mark(C),
    resolve_store(collect_basic(Pids, Names, []), C, Mark).

mark(undefined) -> undefined;
mark(_Calibration) -> ?NATIVE:accounting_mark().

registered_names() ->
    maps:from_list([{P, N} || N <- erlang:registered(), P <- [erlang:whereis(N)], is_pid(P)]).

collect_basic([], _Names, Acc) ->
    lists:reverse(Acc);
collect_basic([P | Rest], Names, Acc) ->
    case erlang:process_info(P, ?BASIC_ITEMS) of
        undefined ->
            collect_basic(Rest, Names, Acc);
        [{memory, Mem}, {binary, Bins}] ->
            R = {P, Bins, listed_bytes(Bins, 0), maps:get(P, Names, undefined), Mem},
            collect_basic(Rest, Names, [R | Acc])
    end.

collect_full([], Acc) ->
    lists:reverse(Acc);
collect_full([P | Rest], Acc) ->
    case erlang:process_info(P, ?ITEMS) of
        undefined ->
            collect_full(Rest, Acc);
        Info ->
            collect_full(Rest, [record(P, Info) | Acc])
    end.

record(P, [{registered_name, Name}, {initial_call, Init}, {current_function, Cur},
           {memory, Mem}, {message_queue_len, MQL}, {reductions, Reds}, {binary, Bins},
           {garbage_collection, GC}, {garbage_collection_info, GCI}]) ->
    {Minor, Fullsweep} = gc(GC),
    {OldBlock, Block, Mbuf, Stack, OldHeap, Heap, VHeap, OldVHeap} = gc_info(GCI),
    %% The total heap is what process_info's total_heap_size reports: young and old heap blocks
    %% plus heap fragments.
    {P, Bins, listed_bytes(Bins, 0), name(Name), initial_call(P, Init), Cur, Mem,
     OldBlock + Block + Mbuf, Heap, Stack, MQL, Reds, Minor, Fullsweep, VHeap, OldVHeap, OldHeap}.

%% ERTS builds these lists in a fixed order; match it directly (a scan of 50k processes spends
%% real time in key lookups) and fall back to lookups if a release ever changes it.
gc([_MaxHeap, _MinBinVHeap, _MinHeap, {fullsweep_after, F}, {minor_gcs, M}]) ->
    {M, F};
gc(GC) ->
    {proplists:get_value(minor_gcs, GC, 0), proplists:get_value(fullsweep_after, GC, 0)}.

gc_info([{old_heap_block_size, OB}, {heap_block_size, B}, {mbuf_size, MB}, {recent_size, _},
         {stack_size, S}, {old_heap_size, OH}, {heap_size, H}, {bin_vheap_size, V},
         {bin_vheap_block_size, _}, {bin_old_vheap_size, OV}, {bin_old_vheap_block_size, _}]) ->
    {OB, B, MB, S, OH, H, V, OV};
gc_info(GCI) ->
    G = fun(K) -> proplists:get_value(K, GCI, 0) end,
    {G(old_heap_block_size), G(heap_block_size), G(mbuf_size), G(stack_size), G(old_heap_size),
     G(heap_size), G(bin_vheap_size), G(bin_old_vheap_size)}.

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
    case candidates(Records, MagicSize, 1, [], []) of
        {[], []} -> Records;
        {Idx, Lists} ->
            Resolved = ?NATIVE:accounting_resolve(Lists, Offset, MagicSize, Mark),
            replace(Records, 1, maps:from_list(lists:zip(Idx, Resolved)), [])
    end;
resolve_store(Records, undefined, _Mark) ->
    Records.

candidates([], _Size, _I, Idx, Lists) ->
    {lists:reverse(Idx), lists:reverse(Lists)};
candidates([R | Rest], Size, I, Idx, Lists) ->
    Bins = element(?BINS, R),
    case candidate(Bins, Size) of
        true -> candidates(Rest, Size, I + 1, [I | Idx], [Bins | Lists]);
        false -> candidates(Rest, Size, I + 1, Idx, Lists)
    end.

%% Only lists holding an entry of the probe's listed size (its magic binary's: 56 bytes on the
%% project's OTP 25, 27 and 29 builds) can hold store binaries. A probe listed at its payload's
%% size (?PROBE_PAYLOAD) means the VM lists resource binaries at their payload's size: then any
%% non-empty list may hold one, and the NIF matches sizes against the entries.
candidate([], _Size) -> false;
candidate(_Bins, ?PROBE_PAYLOAD) -> true;
candidate(Bins, Size) -> lists:keymember(Size, 2, Bins).

replace([], _I, _Resolved, Acc) ->
    lists:reverse(Acc);
replace([R | Rest], I, Resolved, Acc) ->
    case Resolved of
        #{I := Bins} -> replace(Rest, I + 1, Resolved, [setelement(?BINS, R, Bins) | Acc]);
        _ -> replace(Rest, I + 1, Resolved, [R | Acc])
    end.

store_loaded() ->
    erlang:module_loaded(?NATIVE) andalso erlang:function_exported(?NATIVE, accounting_probe, 0).

%% Store binaries are resolved only by a NIF that has the handle mark (an older one on a remote
%% node could credit a reused address to the wrong process): without it they stay as listed.
resolvable() ->
    store_loaded() andalso erlang:function_exported(?NATIVE, accounting_mark, 0).

%% {Offset, MagicSize} or undefined. A fresh process holding one probe resource binary shows
%% the binary's listed address and size; the NIF returned the resource's own address.
calibration() ->
    case resolvable() of
        false -> undefined;
        true ->
            Key = {?MODULE, calibration},
            case persistent_term:get(Key, none) of
                none ->
                    C = calibrate(),
                    C =/= undefined andalso persistent_term:put(Key, C),
                    C;
                C -> C
            end
    end.

calibrate() ->
    Parent = self(),
    Ref = make_ref(),
    {Pid, MRef} =
        spawn_monitor(fun() ->
                              {Bin, Addr} = ?NATIVE:accounting_probe(),
                              {binary, Listed} = erlang:process_info(self(), binary),
                              Parent ! {Ref, Listed, Addr},
                              byte_size(Bin)
                      end),
    receive
        {Ref, [{Listed, Size, _Refc}], Addr} ->
            erlang:demonitor(MRef, [flush]),
            {Addr - Listed, Size};
        {Ref, _, _} ->
            erlang:demonitor(MRef, [flush]),
            undefined;
        {'DOWN', MRef, process, Pid, _} ->
            undefined
    after 5000 ->
            exit(Pid, kill),
            undefined
    end.

%% Full records (as snapshot/1 with full detail) for a few pids, e.g. leak candidates.
details(Pids) ->
    snapshot(#{pids => Pids, detail => full}).

%% [{Pid, Reductions, MessageQueueLen}] for a few pids (a second sample of leak candidates, to
%% tell idle ones from running ones); a pid that is gone is left out.
activity(Pids) ->
    [{P, R, Q} || P <- Pids, is_pid(P), node(P) =:= node(),
                  [{reductions, R}, {message_queue_len, Q}] <-
                      [erlang:process_info(P, [reductions, message_queue_len])]].

%% The node's memory: erlang:memory/0, OS RSS, and Binscope's store and allocator when loaded.
node_memory() ->
    #{node => node(),
      erlang => maps:from_list(erlang:memory()),
      rss => rss(),
      store => call_native(store_stats, []),
      allocator => case call_native(allocator_stats, []) of
                       {ok, A} -> A;
                       Other -> Other
                   end}.

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
%% Returns #{results => [{Pid, Before, After, RedsBefore, HeapWords, StackWords, MQL}],
%%           live_store_keys => [Key], gc_us => Total}; a pid that is gone is left out.
gc_round(Pids) ->
    Calibration = calibration(),
    T0 = erlang:monotonic_time(microsecond),
    Results = lists:filtermap(fun(P) -> gc_one(P, Calibration) end,
                              [P || P <- Pids, is_pid(P), node(P) =:= node()]),
    T1 = erlang:monotonic_time(microsecond),
    %% Store keys are 1 bsl 62 + entry id; unresolved binaries (1 bsl 63 + address) are not.
    StoreKeys = lists:usort([K || R <- Results, {K, _, _} <- element(2, R),
                                  K >= (1 bsl 62), K < (1 bsl 63)]),
    Live = case StoreKeys of
               [] -> [];
               _ -> ?NATIVE:accounting_live_store_keys(StoreKeys)
           end,
    #{results => Results, live_store_keys => Live, gc_us => T1 - T0}.

%% The before list is resolved before the collection: a store resource the GC frees leaves the
%% NIF's index with it, and could no longer be told apart from any other small binary.
gc_one(P, Calibration) ->
    Mark = mark(Calibration),
    case erlang:process_info(P, [binary, reductions]) of
        undefined ->
            false;
        [{binary, Before}, {reductions, Reds}] ->
            Resolved = resolve_one(Before, Calibration, Mark),
            case erlang:garbage_collect(P) of
                false ->
                    false;
                true ->
                    MarkAfter = mark(Calibration),
                    case erlang:process_info(P, [binary, total_heap_size, stack_size, message_queue_len]) of
                        undefined ->
                            false;
                        [{binary, After}, {total_heap_size, H}, {stack_size, S}, {message_queue_len, Q}] ->
                            {true, {P, Resolved, resolve_one(After, Calibration, MarkAfter),
                                    Reds, H, S, Q}}
                    end
            end
    end.

resolve_one(Bins, {Offset, MagicSize}, Mark) ->
    case candidate(Bins, MagicSize) of
        true -> hd(?NATIVE:accounting_resolve([Bins], Offset, MagicSize, Mark));
        false -> Bins
    end;
resolve_one(Bins, undefined, _Mark) ->
    Bins.
