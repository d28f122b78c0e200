%% The collector's scan that keeps no reply (see binscope_collector): a local basic snapshot
%% (compact => true, on the node whose Binscope NIF attributes it) hands the figures of the
%% process_info/2 replies to the NIF in batches, a few hundred processes at a time
%% (Binscope.Native:accounting_scan_batch/2), and keeps only the pids. Every reply is garbage once
%% its batch is handed over, as in a plain process_info(P, [binary, memory]) sweep: the scanning
%% process's collections copy little more than the pids and free the replies' heap fragments as
%% they go (a scan that kept its records had them all freed by one collection at the end that
%% also copied the whole result), and the NIF reads each list while it is still in the cache.
%%
%% A scanning process's share becomes one #binscope_scan{} (binscope_collector.hrl) in the
%% snapshot's procs: the NIF's scan, the pids in order, the lists the NIF did not take (longer
%% than ?LIST_REFS: their store binaries are resolved at the end of the scan) and the labels. Binscope.Accounting
%% turns them into the records a basic snapshot has always had. OTP only, like every collector
%% module; used only where Binscope's NIF is loaded (available/0).
-module(binscope_collector_compact).

-export([available/0, scan/2]).

-include("binscope_collector.hrl").

%% Processes between looks at the clock, as in binscope_collector; a batch is handed over at
%% each look, or earlier once it holds ?BATCH_REFS references.
-define(CHECK_EVERY, 256).
-define(BATCH_REFS, 4096).
%% A longer list is not batched (the NIF reads a batch on a normal scheduler): it stays with the
%% scan and the attribution, on a dirty scheduler, reads it (PUSH_REFS in accounting.rs).
%% Store binaries of a batched list are resolved by the NIF as the batch is handed over, with
%% the mark read before the first process was listed, as the records scan resolves them after
%% its last process.
-define(LIST_REFS, 4096).

%% Whether this node's NIF has the scan (a node without Binscope, or with an older one, gets
%% the records scan).
available() ->
    erlang:module_loaded(?NATIVE) andalso
        erlang:function_exported(?NATIVE, accounting_scan_batch, 2) andalso
        erlang:function_exported(?NATIVE, accounting_scan_new, 2).

%% As binscope_collector:scan/2 (the same sources, the clock read every ?CHECK_EVERY processes,
%% the store's mark read before the first process is listed), returning [#binscope_scan{}], or
%% {[#binscope_scan{}], When} for a presampled source.
scan(Source, #{calibration := C, items := Items} = Scan) ->
    Mark = binscope_collector:mark(C),
    %% The NIF resolves the store binaries of the lists that may hold them, batch by batch.
    Resolve = case C of
                  undefined -> nil;
                  {Offset, MagicSize} -> {Offset, MagicSize, Mark}
              end,
    %% Room for the node's processes, reserved up front (see accounting_scan_new/2).
    S = {?NATIVE:accounting_scan_new(Resolve, erlang:system_info(process_count)), Items,
         binscope_collector_store:probe(C),
         maps:get(deadline, Scan, infinity)},
    Reds = lists:member(reductions, Items),
    case Source of
        {sampled, Skip, Pids, Sampled} ->
            %% The first Skip pids, then the presampled ones (binscope_collector:sweep/2).
            {Head, B, BR} = loop(Pids, Skip, S, ?CHECK_EVERY, [], [], 0),
            Start = erlang:monotonic_time(microsecond),
            {finish(loop(Sampled, -1, S, ?CHECK_EVERY, Head, B, BR), S, Reds, C, Mark), Start};
        _ ->
            finish(loop(Source, -1, S, ?CHECK_EVERY, [], [], 0), S, Reds, C, Mark)
    end.

%% Over the first N elements of a source (N = -1: all of it): a list of pids or of presampled
%% {Pid, Reductions}, or {iter, Iterator}. Pids: the scan's reversed list (the pid alone, or
%% {more, P, Label, Bins} for a process with a label or a list the NIF did not take); B: the
%% batch, [BinsOrListed, Memory, Reductions | ...] newest first; BR: its references (plus one a
%% process). Returns {Pids, B, BR}.
loop(Src, 0, _S, _K, Pids, B, BR) when is_list(Src) ->
    {Pids, B, BR};
loop(Src, N, S, 0, Pids, B, _BR) ->
    binscope_collector:check(element(4, S)),
    loop(Src, N, S, ?CHECK_EVERY, Pids, hand_over(B, S), 0);
loop(Src, N, S, K, Pids, B, BR) when BR >= ?BATCH_REFS ->
    loop(Src, N, S, K, Pids, hand_over(B, S), 0);
loop([], _N, _S, _K, Pids, B, BR) ->
    {Pids, B, BR};
loop([{P, First} | Rest], N, S, K, Pids, B, BR) ->
    visit(P, First, Rest, N, S, K, Pids, B, BR);
loop([P | Rest], N, S, K, Pids, B, BR) ->
    visit(P, reply, Rest, N, S, K, Pids, B, BR);
loop({iter, none}, _N, _S, _K, Pids, B, BR) ->
    {Pids, B, BR};
loop({iter, Iter}, N, S, K, Pids, B, BR) ->
    case erlang:processes_next(Iter) of
        {P, Next} -> visit(P, reply, {iter, Next}, N, S, K, Pids, B, BR);
        none -> {Pids, B, BR}
    end.

visit(P, First, Next, N, S, K, Pids, B, BR) ->
    case erlang:process_info(P, element(2, S)) of
        undefined ->
            loop(Next, N - 1, S, K - 1, Pids, B, BR);
        [{memory, Mem}, {binary, Bins}, {reductions, Reds} | Label] ->
            keep(P, Mem, Bins, first(First, Reds), Label, Next, N, S, K, Pids, B, BR);
        [{memory, Mem}, {binary, Bins} | Label] ->
            keep(P, Mem, Bins, 0, Label, Next, N, S, K, Pids, B, BR)
    end.

first(reply, Reds) -> Reds;
first(First, _Reds) -> First.

keep(P, Mem, Bins, Reds, Label, Next, N, S, K, Pids, B, BR) ->
    Len = refs(Bins),
    case Len =< ?LIST_REFS of
        true ->
            %% {Bins}: the NIF resolves its store binaries (binscope_collector_store:
            %% may_hold_store/2 tells the lists that may hold one, as in the records scan).
            Entry = case binscope_collector_store:may_hold_store(Bins, element(3, S)) of
                        false -> Bins;
                        true -> {Bins}
                    end,
            loop(Next, N - 1, S, K - 1, labelled(P, Label, Pids), [Entry, Mem, Reds | B],
                 BR + Len + 1);
        false ->
            %% The NIF gets its listed bytes; the list itself comes with the scan.
            loop(Next, N - 1, S, K - 1, [{more, P, label(Label), Bins} | Pids],
                 [listed_bytes(Bins, 0), Mem, Reds | B], BR + 1)
    end.

%% length/1 without a BIF call for the common lists (most processes list none, one or two).
refs([]) -> 0;
refs([_]) -> 1;
refs([_, _]) -> 2;
refs(Bins) -> length(Bins).

labelled(P, [], Pids) -> [P | Pids];
labelled(P, [{label, undefined}], Pids) -> [P | Pids];
labelled(P, [{label, L}], Pids) -> [{more, P, L, none} | Pids].

label([]) -> undefined;
label([{label, L}]) -> L.

listed_bytes([], Acc) -> Acc;
listed_bytes([{_, Size, _} | T], Acc) -> listed_bytes(T, Acc + Size).

hand_over([], _S) ->
    [];
hand_over(B, S) ->
    true = ?NATIVE:accounting_scan_batch(element(1, S), B),
    [].

%% The scan's share in order: pids, pending lists [{Index, Bins}] (0-based, ascending) with
%% their store binaries resolved, labels [{Index, Label}] of the processes that have one.
finish({Reversed, B, _BR}, S, Reds, C, Mark) ->
    [] = hand_over(B, S),
    {Pids, Pending, Labels} = unwrap(Reversed, [], 0, [], []),
    [#binscope_scan{acc = element(1, S), pids = Pids, pending = resolve(Pending, C, Mark),
                    labels = Labels, reductions = Reds}].

%% J counts from the end (0 for the last process), so the 0-based index is Count - 1 - J once
%% the count is known.
unwrap([{more, P, Label, Bins} | T], Pids, J, Pending, Labels) ->
    Pending1 = case Bins of
                   none -> Pending;
                   _ -> [{J, Bins} | Pending]
               end,
    Labels1 = case Label of
                  undefined -> Labels;
                  _ -> [{J, Label} | Labels]
              end,
    unwrap(T, [P | Pids], J + 1, Pending1, Labels1);
unwrap([P | T], Pids, J, Pending, Labels) ->
    unwrap(T, [P | Pids], J + 1, Pending, Labels);
unwrap([], Pids, Count, Pending, Labels) ->
    {Pids, [{Count - 1 - J, B} || {J, B} <- Pending], [{Count - 1 - J, L} || {J, L} <- Labels]}.

%% Store binaries of the pending lists resolved as binscope_collector_store:resolve_store/4
%% does (a list without one comes back as it was).
resolve([], _C, _Mark) ->
    [];
resolve(Pending, undefined, _Mark) ->
    Pending;
resolve(Pending, {Offset, MagicSize}, Mark) ->
    Resolved = ?NATIVE:collector_resolve([B || {_, B} <- Pending], Offset, MagicSize, Mark),
    lists:zip([I || {I, _} <- Pending], Resolved).
