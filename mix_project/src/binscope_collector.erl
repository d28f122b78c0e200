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
%%
%% It is several modules, by concept (modules/0 lists them; Binscope.Remote loads every one onto a
%% target); this one is the entry point of every call and scans processes:
%% - binscope_collector: process scans (snapshot/1, details/1,2, activity/1, queue_data/1) and
%%   the deadlines every module honours;
%% - binscope_collector_store: store binaries (calibration, resolution to store entries);
%% - binscope_collector_gc: forced GC rounds of the leak finder (gc_round/1,2);
%% - binscope_collector_memory: node memory, the VM's allocators, the kernel's figures,
%%   applications;
%% - binscope_collector_ets: ETS tables and the binaries they reference;
%% - binscope_collector_compact: a basic snapshot of the node that attributes it (compact =>
%%   true, where Binscope's NIF is loaded), which keeps no reply: each batch of replies' figures
%%   goes to the NIF as it arrives.
-module(binscope_collector).

-export([modules/0]).
-export([worker_opts/0]).
-export([snapshot/1, details/1, details/2, activity/1, node_memory/0, gc_round/1, gc_round/2,
         calibration/0, calibration_status/0, check_calibration/2]).
-export([allocators/0, kernel_memory/0, ets_tables/1, ets_binaries/1, applications/0, erlang/0]).
-export([queue_data/1]).
%% Exported for tests: the figures taken from garbage_collection and garbage_collection_info.
-export([gc_fields/2]).
%% For the collector's other modules.
-export([deadline/1, time_left/1, check/1, stop_worker/1, flush/1, mark/1, take/3, rev/2,
         append/1]).

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
-define(CHECK_EVERY, 256).

%% Pids presampled per millisecond of window: a sweep reads at most one process per us (measured
%% 1.2-1.8 us per process_info/2 of the binary list), so the sweep of the pids before them alone
%% lasts the window. A faster sweep only makes the caller wait for the rest of the window.
-define(SAMPLE_PER_MS, 1000).

%% Every module of the collector: Binscope.Remote loads each of them onto a node that lacks
%% them (this one last).
modules() ->
    [binscope_collector_store, binscope_collector_gc, binscope_collector_memory,
     binscope_collector_ets, binscope_collector_compact, binscope_collector].

%% The calls other modules answer (see each one for what it does and costs).
calibration() -> binscope_collector_store:calibration().
calibration_status() -> binscope_collector_store:calibration_status().
check_calibration(Listed, Addrs) -> binscope_collector_store:check_calibration(Listed, Addrs).
gc_round(Pids) -> binscope_collector_gc:gc_round(Pids).
gc_round(Pids, Opts) -> binscope_collector_gc:gc_round(Pids, Opts).
node_memory() -> binscope_collector_memory:node_memory().
allocators() -> binscope_collector_memory:allocators().
kernel_memory() -> binscope_collector_memory:kernel_memory().
applications() -> binscope_collector_memory:applications().
erlang() -> binscope_collector_memory:erlang().
ets_tables(Limit) -> binscope_collector_ets:ets_tables(Limit).
ets_binaries(Opts) -> binscope_collector_ets:ets_binaries(Opts).

%% Snapshot of processes: #{node, time_ms, word_size, store, workers, procs => [Record]}.
%% Opts: #{pids => all | [pid()], detail => full | basic, workers => auto | pos_integer(),
%%        budget_ms => non_neg_integer(), reductions => boolean(), window_ms => non_neg_integer()}.
%% Processes that exit during the scan are skipped.
%%
%% window_ms => Ms (basic detail with reductions; a leak scan that samples its shortlist's
%% activity again Ms after each record's reductions were read): each scanning process reads the
%% reductions of the last ?SAMPLE_PER_MS * Ms pids of its share first, before its sweep, and
%% their records carry that sample. reductions is one of the few items process_info/2 reads
%% straight from another process (0.06-0.13 us per process, and the target pays no reduction,
%% on OTP 25, 27 and 29; binary is a signal the target handles, a round trip of 1.2-1.8 us), so
%% the window runs during the sweep instead of after it. The result then carries
%% sampled_age_us: how long before the reply the last record's first sample was taken.
snapshot(Opts) ->
    Deadline = deadline(Opts),
    Detail = maps:get(detail, Opts, full),
    Label = label_item(),
    %% reductions => true (basic detail): each record also carries the process's reductions,
    %% appended last (a leak scan's first activity sample, taken in the same call).
    Reds = case {Detail, maps:get(reductions, Opts, false)} of
               {basic, true} -> [reductions];
               _ -> []
           end,
    Window = case Reds of
                 [reductions] -> maps:get(window_ms, Opts, 0);
                 [] -> 0
             end,
    Scan = #{detail => Detail,
             items => case Detail of
                          basic -> ?BASIC_ITEMS ++ Reds ++ Label;
                          full -> ?ITEMS ++ Label
                      end,
             names => case Detail of
                          basic -> registered_names();
                          full -> #{}
                      end,
             calibration => binscope_collector_store:calibration(),
             %% How many pids at the end of each share are sampled before the sweep.
             presample => Window * ?SAMPLE_PER_MS,
             deadline => Deadline,
             compact => compact(Detail, Opts)},
    WorkersOpt = maps:get(workers, Opts, auto),
    {Workers, {Procs, Sampled}} =
        case maps:get(pids, Opts, all) of
            all ->
                whole_node(Scan, WorkersOpt);
            List when is_list(List) ->
                Pids = [P || P <- List, is_pid(P), node(P) =:= node()],
                W = workers(WorkersOpt, length(Pids)),
                {W, collect(Pids, Scan, W)}
        end,
    Age = case Window of
              0 -> #{};
              _ -> #{sampled_age_us => erlang:monotonic_time(microsecond) - Sampled}
          end,
    %% A compact scan's records are built by the caller, which needs the names.
    Names = case Scan of
                #{compact := true, names := N} -> #{names => N};
                _ -> #{}
            end,
    maps:merge(maps:merge(Age, Names), #{node => node(),
      time_ms => erlang:system_time(millisecond),
      word_size => erlang:system_info(wordsize),
      %% Whether the virtual binary heap charges NIF resource binaries their size: not from
      %% OTP 27 on (OTP issue 11611), so the caller cannot estimate other NIFs' native bytes.
      resource_vheap => list_to_integer(erlang:system_info(otp_release)) < 27,
      store => binscope_collector_store:store_loaded(),
      store_resolution => case binscope_collector_store:calibration_status() of
                              {ok, _} -> ok;
                              Other -> Other
                          end,
      workers => Workers,
      procs => Procs}).

%% compact => true (basic detail, asked by the caller on the node whose NIF attributes the
%% scan): the scan keeps no reply (binscope_collector_compact); procs is then a list of
%% #binscope_scan{} and the result carries the registered names.
compact(basic, #{compact := true}) -> binscope_collector_compact:available();
compact(_Detail, _Opts) -> false.

%% [label] where process_info/2 has the item (OTP 27+), [] where it raises badarg. Checked once
%% per snapshot, on the collector itself, not per process.
label_item() ->
    try erlang:process_info(self(), label) of
        {label, _} -> [label];
        _ -> []
    catch
        error:badarg -> []
    end.

%% A whole-node scan. On OTP 28+ it takes pids from the processes iterator, with one worker or
%% several. erlang:processes/0 builds the list of every pid in one BIF call: at 1M processes on
%% OTP 29 that call held its scheduler up to 61 ms (the first call, into fresh pages; later
%% calls 3-4 ms slices), while a walk of the iterator saw at most 5 ms, as much as a loop of plain
%% code saw there. Split among workers, the scanner then also never holds the list of every pid
%% next to the chunks split from it (the caller keeps only the workers' chunks, for rescans).
%% Measured at 200k processes on OTP 29 (basic detail, 2 workers): 21-23 MiB of heap in use
%% against 27-29 MiB from the list. OTP 25-27 have no iterator and take the list. So does a
%% scan that presamples its shares' ends (window_ms): the iterator cannot tell which pids come
%% last.
whole_node(#{presample := Presample} = Scan, WorkersOpt) ->
    Iterator = Presample =:= 0 andalso erlang:function_exported(erlang, processes_iterator, 0),
    case Iterator andalso workers(WorkersOpt, erlang:system_info(process_count)) of
        K when is_integer(K) ->
            Procs = collect_iter(erlang:processes_iterator(), Scan, K),
            {K, {Procs, erlang:monotonic_time(microsecond)}};
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
%% pid order, with the time (monotonic, us) by which every record's reductions were read. A
%% worker that dies (killed from outside: process_info/2 does not raise here) has its chunk
%% rescanned by the caller.
collect(Pids, Scan, 1) ->
    sweep(Pids, Scan);
collect(Pids, Scan, K) ->
    [Own | Chunks] = split(Pids, (length(Pids) + K - 1) div K, []),
    Parent = self(),
    Started = [start_worker(Parent, Chunk, Scan) || Chunk <- Chunks],
    try
        Parts = [sweep(Own, Scan) | [gather(W, Scan, []) || W <- Started]],
        {append([R || {R, _} <- Parts]), lists:max([T || {_, T} <- Parts])}
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
        %% (Without a presample: gather/3's times are not needed.)
        append([R || W <- Started, {R, _} <- [gather(W, Scan, [])]] ++ [Mine])
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

%% Spawn options of the processes a scan starts (workers, helpers, Binscope.Scanner): a minimum
%% heap above the VM's size for a dirty collection (ERTS_POTENTIALLY_LONG_GC_HSIZE, 128k words),
%% so that the collection of a full heap runs on a dirty scheduler, not on the normal one the
%% scan runs on. Collections of heaps under that size held a normal scheduler 2-11 ms in scans of
%% 20k processes on a machine whose page faults cost 2.9 us each (1.5 MiB a process, used as it
%% fills).
worker_opts() ->
    [{min_heap_size, 196650}].

start_worker(Parent, Chunk, Scan) ->
    Tag = make_ref(),
    {Pid, MRef} = spawn_opt(fun() -> work(Parent, Tag, Chunk, Scan) end,
                            [monitor | worker_opts()]),
    {Tag, Pid, MRef, Chunk}.

%% A worker presamples the end of its chunk as sweep/2 does, then sends its records in pieces
%% (the chunk's first pids, then the presampled ones) and, last, when every first sample was in.
work(Parent, Tag, Chunk, Scan) ->
    try
        {Skip, Sampled} = presample(Chunk, Scan),
        _ = send_pieces(Parent, Tag, Chunk, Skip, Scan),
        Start = erlang:monotonic_time(microsecond),
        [] = send_pieces(Parent, Tag, Sampled, length(Sampled), Scan),
        Parent ! {Tag, done, Start}
    catch
        throw:?TIMEOUT -> Parent ! {Tag, timeout}
    end.

%% Sends the records of the first N elements of L in pieces; returns what is left of L.
send_pieces(_Parent, _Tag, L, 0, _Scan) ->
    L;
send_pieces(Parent, Tag, L, N, Scan) ->
    {Piece, Rest} = take(L, min(N, ?PIECE), []),
    Parent ! {Tag, scan(Piece, Scan)},
    send_pieces(Parent, Tag, Rest, N - min(N, ?PIECE), Scan).

gather({Tag, Pid, MRef, Chunk} = W, Scan, Acc) ->
    %% The clock, not only the receive's after: pieces keep arriving while a worker scans.
    check(maps:get(deadline, Scan)),
    receive
        {Tag, done, Start} ->
            erlang:demonitor(MRef, [flush]),
            {append(lists:reverse(Acc)), Start};
        {Tag, timeout} ->
            throw(?TIMEOUT);
        {Tag, Records} ->
            gather(W, Scan, [Records | Acc]);
        {'DOWN', MRef, process, Pid, _} ->
            flush(Tag),
            sweep(Chunk, Scan)
    after time_left(maps:get(deadline, Scan)) ->
            throw(?TIMEOUT)
    end.

%% Drops every message tagged Tag: a worker's pieces and results ({Tag, _}) and its last word
%% ({Tag, done, Start}), which it may have sent just before it was stopped.
flush(Tag) ->
    receive
        {Tag, _} -> flush(Tag);
        {Tag, _, _} -> flush(Tag)
    after 0 -> ok
    end.

split([], _Size, Acc) ->
    lists:reverse(Acc);
split(L, Size, Acc) ->
    {Chunk, Rest} = take(L, Size, []),
    split(Rest, Size, [Chunk | Acc]).

take([], _N, Acc) -> {lists:reverse(Acc), []};
take(L, 0, Acc) -> {lists:reverse(Acc), L};
take([H | T], N, Acc) -> take(T, N - 1, [H | Acc]).

%% One scanning process's sweep of a list of pids: {Records, When}, When the time (monotonic,
%% us) by which every record's reductions were read (with presample => 0, the sweep's end).
%% With presample => N, the reductions of the last N pids are read first and their records
%% carry that sample: the rest of the sweep then runs inside the caller's activity window.
sweep(Pids, #{presample := 0} = Scan) ->
    Records = scan(Pids, Scan),
    {Records, erlang:monotonic_time(microsecond)};
sweep(Pids, Scan) ->
    {Skip, Sampled} = presample(Pids, Scan),
    scan({sampled, Skip, Pids, Sampled}, Scan).

%% {Skip, [{Pid, Reductions}]}: the reductions of the pids after the first Skip (the last
%% `presample` of them); a pid that is gone is left out. Plain code (it yields as any loop does),
%% the deadline read every ?CHECK_EVERY pids as in the sweep.
presample(Pids, #{presample := 0}) ->
    {length(Pids), []};
presample(Pids, #{presample := N} = Scan) ->
    Skip = max(length(Pids) - N, 0),
    Deadline = maps:get(deadline, Scan, infinity),
    {Skip, rev(presample(lists:nthtail(Skip, Pids), Deadline, ?CHECK_EVERY, []), [])}.

presample(Pids, Deadline, 0, Acc) ->
    check(Deadline),
    presample(Pids, Deadline, ?CHECK_EVERY, Acc);
presample([], _Deadline, _K, Acc) ->
    Acc;
presample([P | Rest], Deadline, K, Acc) ->
    case erlang:process_info(P, reductions) of
        {reductions, R} -> presample(Rest, Deadline, K - 1, [{P, R} | Acc]);
        undefined -> presample(Rest, Deadline, K - 1, Acc)
    end.

%% One process's share of the scan (a list of pids, or {iter, Iterator} for the rest of a
%% processes iterator): its records, store binaries resolved. With a deadline, the clock is
%% read every ?CHECK_EVERY processes. The store's mark is read before the first process is
%% listed: resolution then trusts only store resources that lived through the whole listing (an
%% address freed and reused meanwhile is never credited to the process that listed the old
%% binary; it comes back as unresolved).
%% Whether a list may hold store binaries is decided as its reply arrives, while the list is in
%% the cache: a second pass over every record's list after the scan read each one from memory
%% again (at 50k processes, one cache miss a process).
scan(Source, #{compact := true} = Scan) ->
    binscope_collector_compact:scan(Source, Scan);
scan(Source, #{calibration := C} = Scan) ->
    Mark = mark(C),
    Probe = binscope_collector_store:probe(C),
    F = case Scan of
            #{detail := full, items := Items} ->
                fun(P, Acc) -> full(P, Items, Probe, Acc) end;
            #{detail := basic, items := Items, names := Names} ->
                fun(P, Acc) -> basic(P, Items, Names, Probe, Acc) end
        end,
    Deadline = maps:get(deadline, Scan, infinity),
    case Source of
        {sampled, Skip, Pids, Sampled} ->
            %% The first Skip pids, then the presampled ones; {Records, When} (see sweep/2).
            Head = fold_first(Skip, Pids, F, Deadline, ?CHECK_EVERY, []),
            Start = erlang:monotonic_time(microsecond),
            {resolve(fold(Sampled, F, Deadline, ?CHECK_EVERY, Head), C, Mark), Start};
        _ ->
            resolve(fold(Source, F, Deadline, ?CHECK_EVERY, []), C, Mark)
    end.

%% The scan's records in order, their store binaries resolved.
resolve(Reversed, C, Mark) ->
    {Records, Candidates} = unwrap(Reversed, [], 0, []),
    binscope_collector_store:resolve_store(Records, Candidates, C, Mark).

%% Adds record R of a process that listed Bins to the scan's (reversed) records, as
%% {store, R, Bins} when Bins may hold store binaries: nothing more per process in the common
%% case (no count or candidate list carried through the scan).
add(R, Bins, Probe, Acc) ->
    case binscope_collector_store:may_hold_store(Bins, Probe) of
        true -> [{store, R, Bins} | Acc];
        false -> [R | Acc]
    end.

%% The scan's reversal (as rev/2), unwrapping candidates: {Records, [{Index, Bins}]}, Index the
%% record's 1-based place. J counts from the end, so Index is Count - J + 1 once the count is
%% known.
unwrap([{store, R, Bins} | T], Acc, J, Cs) -> unwrap(T, [R | Acc], J + 1, [{J + 1, Bins} | Cs]);
unwrap([R | T], Acc, J, Cs) -> unwrap(T, [R | Acc], J + 1, Cs);
unwrap([], Acc, Count, Cs) -> {Acc, [{Count - J + 1, Bins} || {J, Bins} <- Cs]}.

mark(undefined) -> undefined;
mark(_Calibration) -> ?NATIVE:collector_mark().

%% F(P, Acc) over every pid of Source, in its order.
fold(Source, F, Deadline, 0, Acc) ->
    check(Deadline),
    fold(Source, F, Deadline, ?CHECK_EVERY, Acc);
fold([], _F, _Deadline, _K, Acc) ->
    Acc;
fold([P | Rest], F, Deadline, K, Acc) ->
    fold(Rest, F, Deadline, K - 1, F(P, Acc));
fold({iter, none}, _F, _Deadline, _K, Acc) ->
    Acc;
fold({iter, Iter}, F, Deadline, K, Acc) ->
    case erlang:processes_next(Iter) of
        {P, Next} -> fold({iter, Next}, F, Deadline, K - 1, F(P, Acc));
        none -> Acc
    end.

%% As fold/5, over the first N pids of a list (no tuple per pid: at 1M processes, 30 MB of
%% garbage).
fold_first(N, L, F, Deadline, 0, Acc) ->
    check(Deadline),
    fold_first(N, L, F, Deadline, ?CHECK_EVERY, Acc);
fold_first(0, _L, _F, _Deadline, _K, Acc) ->
    Acc;
fold_first(N, [P | Rest], F, Deadline, K, Acc) ->
    fold_first(N - 1, Rest, F, Deadline, K - 1, F(P, Acc)).

%% lists:reverse/2 and lists:append/1 as plain Erlang: they yield like any code. Over a
%% million processes the BIFs build their whole result in one call (measured at 1M processes:
%% the scanner held its scheduler 14-26 ms in append).
rev([H | T], Acc) -> rev(T, [H | Acc]);
rev([], Acc) -> Acc.

append(Lists) -> rev(lists:foldl(fun rev/2, [], Lists), []).

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

%% A pid, or {Pid, Reductions} for a presampled one (see sweep/2): its record then carries that
%% first sample instead of the reply's.
basic({P, First}, Items, Names, Probe, Acc) ->
    basic(P, First, Items, Names, Probe, Acc);
basic(P, Items, Names, Probe, Acc) ->
    basic(P, reply, Items, Names, Probe, Acc).

basic(P, First, Items, Names, Probe, Acc) ->
    case erlang:process_info(P, Items) of
        undefined ->
            Acc;
        [{memory, Mem}, {binary, Bins}, {reductions, Reds} | Label] ->
            basic_record(P, Mem, Bins, first(First, Reds), Label, Names, Probe, Acc);
        [{memory, Mem}, {binary, Bins} | Label] ->
            basic_record(P, Mem, Bins, undefined, Label, Names, Probe, Acc)
    end.

first(reply, Reds) -> Reds;
first(First, _Reds) -> First.

basic_record(P, Mem, Bins, Reds, Label, Names, Probe, Acc) ->
    add(#binscope_basic{pid = P, binaries = Bins, listed_bytes = listed_bytes(Bins, 0),
                        registered_name = maps:get(P, Names, undefined),
                        label = label(Label), memory = Mem, reductions = Reds},
        Bins, Probe, Acc).

full(P, Items, Probe, Acc) ->
    case erlang:process_info(P, Items) of
        undefined ->
            Acc;
        Info ->
            #binscope_process{binaries = Bins} = R = record(P, Info),
            add(R, Bins, Probe, Acc)
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
