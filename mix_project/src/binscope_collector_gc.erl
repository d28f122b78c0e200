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

%% gc_round/1 with options: budget_ms. A helper process does the collections and sends their
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
    T0 = erlang:monotonic_time(microsecond),
    Results = timed_gc(Local, Calibration, Deadline),
    T1 = erlang:monotonic_time(microsecond),
    %% Store keys are 1 bsl 62 + entry id; unresolved binaries (1 bsl 63 + address) are not.
    StoreKeys = lists:usort([K || #binscope_gc{binaries_before = Bins} <- Results, {K, _, _} <- Bins,
                                  K >= (1 bsl 62), K < (1 bsl 63)]),
    Live = case StoreKeys of
               [] -> [];
               _ -> ?NATIVE:collector_live_store_keys(StoreKeys)
           end,
    #{results => Results, live_store_keys => Live, gc_us => T1 - T0,
      word_size => erlang:system_info(wordsize)}.

%% With all, the helper lists the processes itself: a list of every pid in the helper's closure
%% was copied to it when it was spawned, in one copy that cannot be preempted (measured at 1M
%% processes: the caller held its scheduler 8-113 ms there).
timed_gc(Pids, Calibration, Deadline) ->
    Parent = self(),
    Tag = make_ref(),
    {Pid, MRef} =
        spawn_opt(fun() -> gc_pieces(Parent, Tag, targets(Pids, Parent), Calibration) end,
                  [monitor | binscope_collector:worker_opts()]),
    W = {Tag, Pid, MRef, []},
    try gc_results(W, Deadline, [])
    catch
        throw:?TIMEOUT ->
            binscope_collector:stop_worker(W),
            throw(?TIMEOUT)
    end.

-define(PIECE, 1000).

%% Every process of this node but the round's caller and its helper (the caller of this).
targets(all, Parent) ->
    Self = self(),
    [P || P <- erlang:processes(), P =/= Parent, P =/= Self];
targets(Pids, _Parent) ->
    Pids.

gc_pieces(Parent, Tag, Pids, Calibration) ->
    {Piece, Rest} = binscope_collector:take(Pids, ?PIECE, []),
    Parent ! {Tag, collect(Piece, Calibration, make_ref(), [])},
    case Rest of
        [] -> Parent ! {Tag, done};
        _ -> gc_pieces(Parent, Tag, Rest, Calibration)
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

collect([], _Calibration, _Tag, Acc) ->
    lists:reverse(Acc);
collect(Pids, Calibration, Tag, Acc) ->
    {Batch, Rest} = binscope_collector:take(Pids, ?WINDOW, []),
    Asked = ask(Batch, Calibration, Tag, []),
    collect(Rest, Calibration, Tag, collected(lists:reverse(Asked), Calibration, Tag, Acc)).

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
%% looks at most at the window's replies).
collected([], _Calibration, _Tag, Acc) ->
    Acc;
collected([{P, Resolved, Reds} | Rest], {C, _} = Calibration, Tag, Acc) ->
    receive
        {garbage_collect, {Tag, P}, false} ->
            collected(Rest, Calibration, Tag, Acc);
        {garbage_collect, {Tag, P}, true} ->
            MarkAfter = binscope_collector:mark(C),
            case erlang:process_info(P, [binary, total_heap_size, stack_size, message_queue_len]) of
                undefined ->
                    collected(Rest, Calibration, Tag, Acc);
                [{binary, After}, {total_heap_size, H}, {stack_size, S}, {message_queue_len, Q}] ->
                    R = #binscope_gc{pid = P, binaries_before = Resolved,
                                     binaries_after = resolve_one(After, Calibration, MarkAfter),
                                     reductions = Reds, total_heap_size = H, stack_size = S,
                                     message_queue_len = Q},
                    collected(Rest, Calibration, Tag, [R | Acc])
            end
    end.

resolve_one(Bins, {{Offset, MagicSize}, Any}, Mark) ->
    case binscope_collector_store:may_hold_store(Bins, MagicSize, Any) of
        true -> hd(?NATIVE:collector_resolve([Bins], Offset, MagicSize, Mark));
        false -> Bins
    end;
resolve_one(Bins, {undefined, _Any}, _Mark) ->
    Bins.
