%% The collector's node-wide figures (see binscope_collector): erlang:memory/0, the VM's
%% allocators, the kernel's view of the OS process, Binscope's store and allocator where it is
%% loaded, and which application each process belongs to. OTP only, like every collector module.
-module(binscope_collector_memory).

-export([node_memory/0, allocators/0, kernel_memory/0, applications/0, erlang/0]).

-include("binscope_collector.hrl").

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
    case binscope_collector_store:store_loaded() of
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
