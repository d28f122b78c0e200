%% The leak finder's GC rounds (see binscope_collector): FORCES a major garbage collection of
%% every pid it is given (that is its purpose); each collection stops that process for as long as
%% it takes to copy its live heap. OTP only, like every collector module.
-module(binscope_collector_gc).

-export([gc_round/1, gc_round/2]).

-include("binscope_collector.hrl").

%% Forces a major GC of each pid, one at a time, and lists its binaries before and after.
%% Returns #{results => [#binscope_gc{}], live_store_keys => [Key], gc_us => Total,
%% word_size => W}; a pid that is gone is left out. Pids = all: every process of this node but
%% the caller (a full leak scan), as recon's bin_leak/1 collects them, without the caller
%% building the list first.
gc_round(Pids) ->
    gc_round(Pids, #{}).

%% gc_round/1 with options: budget_ms, and compact => true (asked by the caller on the node whose
%% Binscope NIF ranks the round): each window's binary lists go to the NIF as its collections
%% complete (Binscope.Native:leaks_round_batch/2), the results keep none (binaries_before and
%% binaries_after are []), and the reply carries the NIF's round as round => Round. A node
%% without the NIF ignores it. A helper process does the collections and sends their
%% results in pieces of ?PIECE (one message each, not one per process: a full scan collects every
%% process on the node); this process waits (with a budget: with the time left, and when it runs
%% out, kills the helper (a collection already asked for completes in its target; nothing else is
%% touched) and throws ?TIMEOUT). The collections' replies go to the helper, so none is ever
%% left in this process's mailbox.
gc_round(Pids, Opts) ->
    Deadline = binscope_collector:deadline(Opts),
    %% Whether store binaries may list at their real size, read once for the round.
    Calibration = {binscope_collector_store:calibration(),
                   binscope_collector_store:store_sizes_patched()},
    Local = case Pids of
                all -> all;
                _ -> [P || P <- Pids, is_pid(P), node(P) =:= node()]
            end,
    Round = case maps:get(compact, Opts, false) andalso compact_available() of
                true ->
                    ?NATIVE:leaks_round_new(case Local of
                                                all -> erlang:system_info(process_count);
                                                _ -> length(Local)
                                            end);
                false ->
                    undefined
            end,
    T0 = erlang:monotonic_time(microsecond),
    Results = timed_gc(Local, Calibration, Round, Deadline),
    T1 = erlang:monotonic_time(microsecond),
    Round1 = case Round of
                 undefined -> #{};
                 _ -> #{round => Round}
             end,
    maps:merge(Round1, #{results => Results, live_store_keys => live_store_keys(Results, Round),
                         gc_us => T1 - T0, word_size => erlang:system_info(wordsize)}).

%% Whether this node's NIF takes a round's lists (a node without Binscope, or with an older one,
%% keeps them in the results).
compact_available() ->
    erlang:module_loaded(?NATIVE) andalso
        erlang:function_exported(?NATIVE, leaks_round_batch, 2) andalso
        erlang:function_exported(?NATIVE, leaks_full_rank_round, 4).

%% The store entries listed before the collections that are still live.
live_store_keys(Results, undefined) ->
    %% Store keys are 1 bsl 62 + entry id; unresolved binaries (1 bsl 63 + address) are not.
    StoreKeys = lists:usort([K || #binscope_gc{binaries_before = Bins} <- Results, {K, _, _} <- Bins,
                                  K >= (1 bsl 62), K < (1 bsl 63)]),
    case StoreKeys of
        [] -> [];
        _ -> ?NATIVE:collector_live_store_keys(StoreKeys)
    end;
live_store_keys(_Results, Round) ->
    ?NATIVE:leaks_round_live_store_keys(Round).

%% With all, the helper lists the processes itself: a list of every pid in the helper's closure
%% was copied to it when it was spawned, in one copy that cannot be preempted (measured at 1M
%% processes: the caller held its scheduler 8-113 ms there).
timed_gc(Pids, Calibration, Round, Deadline) ->
    Parent = self(),
    Tag = make_ref(),
    {Pid, MRef} =
        spawn_opt(fun() -> gc_pieces(Parent, Tag, targets(Pids, Parent), {Calibration, Round}) end,
                  [monitor | binscope_collector:worker_opts()]),
    W = {Tag, Pid, MRef, []},
    try gc_results(W, Deadline, [])
    catch
        throw:?TIMEOUT ->
            binscope_collector:stop_worker(W),
            throw(?TIMEOUT)
    end.

-define(PIECE, 1000).

%% Every process of this node but the round's caller and its helper (the caller of this), as a
%% source the helper takes its pieces from: on OTP 28+ the processes iterator, a pid at a time;
%% before, erlang:processes/0, the two skipped as the pieces are taken. A filtered copy of that
%% list was one more list of every pid, built into fresh pages: the worst long_schedule of full
%% scans at 1M was reported in that comprehension (11-137 ms in runs of the scale suite).
targets(all, Parent) ->
    Skip = [Parent, self()],
    case erlang:function_exported(erlang, processes_iterator, 0) of
        true -> {iter, erlang:processes_iterator(), Skip};
        false -> {list, erlang:processes(), Skip}
    end;
targets(Pids, _Parent) ->
    {list, Pids, []}.

gc_pieces(Parent, Tag, Source, How) ->
    {Piece, Rest} = piece(Source, ?PIECE, []),
    Parent ! {Tag, collect(Piece, How, make_ref(), [])},
    case Rest of
        done -> Parent ! {Tag, done};
        _ -> gc_pieces(Parent, Tag, Rest, How)
    end.

%% The next N pids of a source, and the rest of it (done once it is exhausted).
piece({list, [], _Skip}, _N, Acc) ->
    {lists:reverse(Acc), done};
piece(Source, 0, Acc) ->
    {lists:reverse(Acc), Source};
piece({list, [P | Ps], Skip}, N, Acc) ->
    case lists:member(P, Skip) of
        true -> piece({list, Ps, Skip}, N, Acc);
        false -> piece({list, Ps, Skip}, N - 1, [P | Acc])
    end;
piece({iter, Iter, Skip}, N, Acc) ->
    case erlang:processes_next(Iter) of
        none ->
            {lists:reverse(Acc), done};
        {P, Next} ->
            case lists:member(P, Skip) of
                true -> piece({iter, Next, Skip}, N, Acc);
                false -> piece({iter, Next, Skip}, N - 1, [P | Acc])
            end
    end.

%% The pieces are joined in plain code (binscope_collector:append/1: it yields, where
%% lists:append/1 over a million results held the scheduler 14-26 ms).
gc_results({Tag, Pid, MRef, _} = W, Deadline, Acc) ->
    binscope_collector:check(Deadline),
    receive
        {Tag, done} ->
            erlang:demonitor(MRef, [flush]),
            binscope_collector:append(lists:reverse(Acc));
        {Tag, Results} when is_list(Results) ->
            gc_results(W, Deadline, [Results | Acc]);
        {'DOWN', MRef, process, Pid, Reason} ->
            binscope_collector:flush(Tag),
            error({gc_helper_died, Reason})
    after binscope_collector:time_left(Deadline) ->
            throw(?TIMEOUT)
    end.

%% Collections are asked for ?WINDOW processes at a time, without waiting for each: every one's
%% binaries are listed and its collection requested (garbage_collect/2, async), then, in the same
%% order, each one's reply awaited and its binaries listed again. A collection runs while the
%% next processes are listed (on a synchronous garbage_collect/1 the helper waited for each in
%% turn: 6-23% of a round at 200k processes; at 1M within the spread of runs). The list after
%% is read only once the reply says the collection is done, so it is the list after it. A pid
%% that is gone (at either listing, or when its collection was asked for) is left out.
-define(WINDOW, 32).
%% A compact round hands each window's lists to the NIF in one batch, read on a normal scheduler
%% when it holds at most ?BATCH_REFS references (ROUND_BATCH_REFS in leaks.rs), on a dirty one
%% otherwise (a window with a process that lists thousands of binaries).
-define(BATCH_REFS, 4096).

%% How = {Calibration, Round}: Round is the NIF's round of a compact round, undefined otherwise.
collect([], _How, _Tag, Acc) ->
    lists:reverse(Acc);
collect(Pids, {Calibration, Round} = How, Tag, Acc) ->
    {Batch, Rest} = binscope_collector:take(Pids, ?WINDOW, []),
    Asked = ask(Batch, Calibration, Tag, []),
    {Acc1, B, BR} = collected(lists:reverse(Asked), Calibration, Tag, Round, Acc, [], 0),
    hand_over(B, BR, Round),
    collect(Rest, How, Tag, Acc1).

%% A compact round's window: its lists to the NIF, in one batch.
hand_over([], _BR, _Round) ->
    ok;
hand_over(B, BR, Round) when BR =< ?BATCH_REFS ->
    true = ?NATIVE:leaks_round_batch(Round, B);
hand_over(B, _BR, Round) ->
    true = ?NATIVE:leaks_round_batch_dirty(Round, B).

%% The before list is resolved before the collection: a store resource the GC frees leaves the
%% NIF's index with it, and could no longer be told apart from any other small binary.
ask([], _Calibration, _Tag, Acc) ->
    Acc;
ask([P | Ps], {C, _} = Calibration, Tag, Acc) ->
    Mark = binscope_collector:mark(C),
    case erlang:process_info(P, [binary, reductions]) of
        undefined ->
            ask(Ps, Calibration, Tag, Acc);
        [{binary, Before}, {reductions, Reds}] ->
            Resolved = resolve_one(Before, Calibration, Mark),
            async = erlang:garbage_collect(P, [{async, {Tag, P}}]),
            ask(Ps, Calibration, Tag, [{P, Resolved, Reds} | Acc])
    end.

%% The replies of one window, oldest first (this helper receives nothing else, so the receive
%% looks at most at the window's replies). Returns {Acc, B, BR}: a round without the NIF's Round
%% keeps each process's lists in its result; a compact one keeps none there and gathers them in
%% B, [Before, After, HeapWords | ...] newest first, with BR references.
collected([], _Calibration, _Tag, _Round, Acc, B, BR) ->
    {Acc, B, BR};
collected([{P, Resolved, Reds} | Rest], {C, _} = Calibration, Tag, Round, Acc, B, BR) ->
    receive
        {garbage_collect, {Tag, P}, false} ->
            collected(Rest, Calibration, Tag, Round, Acc, B, BR);
        {garbage_collect, {Tag, P}, true} ->
            MarkAfter = binscope_collector:mark(C),
            case erlang:process_info(P, [binary, total_heap_size, stack_size, message_queue_len]) of
                undefined ->
                    collected(Rest, Calibration, Tag, Round, Acc, B, BR);
                [{binary, After}, {total_heap_size, H}, {stack_size, S}, {message_queue_len, Q}] ->
                    After1 = resolve_one(After, Calibration, MarkAfter),
                    R = #binscope_gc{pid = P, binaries_before = [], binaries_after = [],
                                     reductions = Reds, total_heap_size = H, stack_size = S,
                                     message_queue_len = Q},
                    case Round of
                        undefined ->
                            R1 = R#binscope_gc{binaries_before = Resolved, binaries_after = After1},
                            collected(Rest, Calibration, Tag, Round, [R1 | Acc], B, BR);
                        _ ->
                            collected(Rest, Calibration, Tag, Round, [R | Acc],
                                      [Resolved, After1, H + S | B],
                                      BR + length(Resolved) + length(After1))
                    end
            end
    end.

resolve_one(Bins, {{Offset, MagicSize}, Any}, Mark) ->
    case binscope_collector_store:may_hold_store(Bins, MagicSize, Any) of
        true -> hd(?NATIVE:collector_resolve([Bins], Offset, MagicSize, Mark));
        false -> Bins
    end;
resolve_one(Bins, {undefined, _Any}, _Mark) ->
    Bins.
