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
-export([allocators/0, kernel_memory/0, ets_tables/1, applications/0, erlang/0]).

-define(NATIVE, 'Elixir.Binscope.Native').
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

%% One process's share of the scan: its records, store binaries resolved.
scan(Pids, #{detail := full, calibration := C}) ->
    resolve_store(collect_full(Pids, []), C);
scan(Pids, #{detail := basic, names := Names, calibration := C}) ->
    resolve_store(collect_basic(Pids, Names, []), C).

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
resolve_store(Records, {Offset, MagicSize}) ->
    %% Only lists holding an entry of the probe's size can hold store binaries.
    case candidates(Records, MagicSize, 1, [], []) of
        {[], []} -> Records;
        {Idx, Lists} ->
            Resolved = ?NATIVE:accounting_resolve(Lists, Offset, MagicSize),
            replace(Records, 1, maps:from_list(lists:zip(Idx, Resolved)), [])
    end;
resolve_store(Records, undefined) ->
    Records.

candidates([], _Size, _I, Idx, Lists) ->
    {lists:reverse(Idx), lists:reverse(Lists)};
candidates([R | Rest], Size, I, Idx, Lists) ->
    Bins = element(?BINS, R),
    case lists:keymember(Size, 2, Bins) of
        true -> candidates(Rest, Size, I + 1, [I | Idx], [Bins | Lists]);
        false -> candidates(Rest, Size, I + 1, Idx, Lists)
    end.

replace([], _I, _Resolved, Acc) ->
    lists:reverse(Acc);
replace([R | Rest], I, Resolved, Acc) ->
    case Resolved of
        #{I := Bins} -> replace(Rest, I + 1, Resolved, [setelement(?BINS, R, Bins) | Acc]);
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
