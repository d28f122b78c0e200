%% The collector's ETS figures (see binscope_collector): the largest tables, and the refc
%% binaries each readable table references. OTP only, like every collector module.
-module(binscope_collector_ets).

-export([ets_tables/1, ets_binaries/1]).

-include("binscope_collector.hrl").

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
    Deadline = binscope_collector:deadline(Opts),
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
            {Pid, MRef} = spawn_opt(fun() -> Parent ! {Tag, read_table(T, Max)} end,
                                    [monitor | binscope_collector:worker_opts()]),
            receive
                {Tag, {Status, Bins}} ->
                    erlang:demonitor(MRef, [flush]),
                    {T, Name, Status, Bins};
                {'DOWN', MRef, process, Pid, _} ->
                    {T, Name, gone, []}
            after binscope_collector:time_left(Deadline) ->
                    exit(Pid, kill),
                    receive {'DOWN', MRef, process, Pid, _} -> ok end,
                    binscope_collector:flush(Tag),
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
