%% The part of Binscope that runs on the node being inspected.
%%
%% It depends on OTP only, so Binscope can load it onto a node that does not have Binscope
%% installed (code:load_binary over erpc). It gathers compact data there; attribution and
%% reporting run on the calling node, in Rust.
%%
%% Costs and dangers:
%% - snapshot/1 calls process_info/2 once per process (one lock of each process, briefly).
%%   Safe on a busy node; it costs about as much as one sweep of process_info(P, [binary, memory]).
%% - gc_round/2 FORCES a major garbage collection of every pid it is given (that is its purpose);
%%   each collection stops that process for as long as it takes to copy its live heap.
%% - Nothing here changes process flags, sends messages to the inspected processes or keeps state,
%%   except one persistent_term (the calibration of Binscope store binaries, when Binscope's NIF
%%   is loaded on the node).
-module(binscope_collector).

-export([snapshot/1, details/1, node_memory/0, gc_round/1, calibration/0]).

-define(NATIVE, 'Elixir.Binscope.Native').
%% A process record, in the order binscope's Elixir side reads it.
%% Heap, stack and total heap sizes come from garbage_collection_info: every item costs (the
%% result is built on the collector's heap), so none is asked twice.
-define(ITEMS, [registered_name, initial_call, current_function, memory, message_queue_len,
                reductions, binary, garbage_collection, garbage_collection_info]).
%% detail => basic: what attribution and ranking need, the same two items as a plain
%% process_info(P, [binary, memory]) sweep (every item costs; the GC items above the most).
%% Registered names come from one registered/0 call instead.
-define(BASIC_ITEMS, [memory, binary]).

%% Snapshot of processes: #{node, time_ms, word_size, store, procs => [Record]}.
%% Opts: #{pids => all | [pid()], detail => full | basic}. Processes that exit during the scan
%% are skipped. With basic detail, the fields it does not collect are 'undefined'.
snapshot(Opts) ->
    Pids = case maps:get(pids, Opts, all) of
               all -> erlang:processes();
               List when is_list(List) -> [P || P <- List, is_pid(P), node(P) =:= node()]
           end,
    Raw = case maps:get(detail, Opts, full) of
              full -> collect(Pids, []);
              basic -> collect_basic(Pids, [])
          end,
    Records = resolve_store(Raw),
    #{node => node(),
      time_ms => erlang:system_time(millisecond),
      word_size => erlang:system_info(wordsize),
      store => store_loaded(),
      procs => Records}.

collect_basic(Pids, Acc) ->
    Names = maps:from_list([{P, N} || N <- erlang:registered(), P <- [erlang:whereis(N)], is_pid(P)]),
    collect_basic(Pids, Names, Acc).

collect_basic([], _Names, Acc) ->
    lists:reverse(Acc);
collect_basic([P | Rest], Names, Acc) ->
    case erlang:process_info(P, ?BASIC_ITEMS) of
        undefined ->
            collect_basic(Rest, Names, Acc);
        [{memory, Mem}, {binary, Bins}] ->
            U = undefined,
            R = {P, maps:get(P, Names, U), U, U, Mem, U, U, U, U, U, Bins, U, U, U, U, U,
                 listed_bytes(Bins, 0)},
            collect_basic(Rest, Names, [R | Acc])
    end.

collect([], Acc) ->
    lists:reverse(Acc);
collect([P | Rest], Acc) ->
    case erlang:process_info(P, ?ITEMS) of
        undefined ->
            collect(Rest, Acc);
        Info ->
            collect(Rest, [record(P, Info) | Acc])
    end.

record(P, [{registered_name, Name}, {initial_call, Init}, {current_function, Cur},
           {memory, Mem}, {message_queue_len, MQL}, {reductions, Reds}, {binary, Bins},
           {garbage_collection, GC}, {garbage_collection_info, GCI}]) ->
    {Minor, Fullsweep} = gc(GC),
    {OldBlock, Block, Mbuf, Stack, OldHeap, Heap, VHeap, OldVHeap} = gc_info(GCI),
    %% Element 11 is the binary list (resolve_store/1 rewrites it); element 17 is what the VM
    %% itself reports for them (store binaries at their listed size). The total heap is what
    %% process_info's total_heap_size reports: young and old heap blocks plus heap fragments.
    {P, name(Name), initial_call(P, Init), Cur, Mem, OldBlock + Block + Mbuf, Heap, Stack, MQL,
     Reds, Bins, Minor, Fullsweep, VHeap, OldVHeap, OldHeap, listed_bytes(Bins, 0)}.

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
resolve_store(Records) ->
    case calibration() of
        {Offset, MagicSize} ->
            %% Only lists holding an entry of the probe's size can hold store binaries.
            case candidates(Records, MagicSize, 1, [], []) of
                {[], []} -> Records;
                {Idx, Lists} ->
                    Resolved = ?NATIVE:accounting_resolve(Lists, Offset, MagicSize),
                    replace(Records, 1, maps:from_list(lists:zip(Idx, Resolved)), [])
            end;
        undefined ->
            Records
    end.

candidates([], _Size, _I, Idx, Lists) ->
    {lists:reverse(Idx), lists:reverse(Lists)};
candidates([R | Rest], Size, I, Idx, Lists) ->
    Bins = element(11, R),
    case lists:keymember(Size, 2, Bins) of
        true -> candidates(Rest, Size, I + 1, [I | Idx], [Bins | Lists]);
        false -> candidates(Rest, Size, I + 1, Idx, Lists)
    end.

replace([], _I, _Resolved, Acc) ->
    lists:reverse(Acc);
replace([R | Rest], I, Resolved, Acc) ->
    case Resolved of
        #{I := Bins} -> replace(Rest, I + 1, Resolved, [setelement(11, R, Bins) | Acc]);
        _ -> replace(Rest, I + 1, Resolved, [R | Acc])
    end.

store_loaded() ->
    erlang:module_loaded(?NATIVE) andalso erlang:function_exported(?NATIVE, accounting_probe, 0).

%% {Offset, MagicSize} or undefined. A fresh process holding one probe resource binary shows
%% the binary's listed address and size; the NIF returned the resource's own address.
calibration() ->
    case store_loaded() of
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
    StoreKeys = lists:usort([K || R <- Results, {K, _, _} <- element(2, R), K >= (1 bsl 62)]),
    Live = case StoreKeys of
               [] -> [];
               _ -> ?NATIVE:accounting_live_store_keys(StoreKeys)
           end,
    #{results => Results, live_store_keys => Live, gc_us => T1 - T0}.

%% The before list is resolved before the collection: a store resource the GC frees leaves the
%% NIF's index with it, and could no longer be told apart from any other small binary.
gc_one(P, Calibration) ->
    case erlang:process_info(P, [binary, reductions]) of
        undefined ->
            false;
        [{binary, Before}, {reductions, Reds}] ->
            Resolved = resolve_one(Before, Calibration),
            case erlang:garbage_collect(P) of
                false ->
                    false;
                true ->
                    case erlang:process_info(P, [binary, total_heap_size, stack_size, message_queue_len]) of
                        undefined ->
                            false;
                        [{binary, After}, {total_heap_size, H}, {stack_size, S}, {message_queue_len, Q}] ->
                            {true, {P, Resolved, resolve_one(After, Calibration), Reds, H, S, Q}}
                    end
            end
    end.

resolve_one(Bins, {Offset, MagicSize}) ->
    case lists:keymember(MagicSize, 2, Bins) of
        true -> hd(?NATIVE:accounting_resolve([Bins], Offset, MagicSize));
        false -> Bins
    end;
resolve_one(Bins, undefined) ->
    Bins.
