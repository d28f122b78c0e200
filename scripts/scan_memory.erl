%% The scanner's memory in a whole-node snapshot (README, "workers:"), on any OTP:
%%   erlc -I mix_project/include -o /tmp/sm mix_project/src/*.erl scripts/scan_memory.erl
%%   erl -noshell +P 1000000 -pa /tmp/sm -run scan_memory run 200000 basic 2
%% (processes, detail, workers). OTP only: no Binscope NIF, so no store calibration.
-module(scan_memory).
-export([run/1]).
%% Peak heap of the process running binscope_collector:snapshot/1 on a node with N idle
%% processes: the largest (young + old heap blocks + heap fragments) seen at any of its GCs,
%% or at the end of the scan with the result still live. Words -> MiB.
run([NA, DA, WA]) ->
    N = list_to_integer(NA),
    Detail = list_to_atom(DA),
    Workers = list_to_integer(WA),
    Pids = [spawn(fun() -> receive stop -> ok end end) || _ <- lists:seq(1, N)],
    erlang:garbage_collect(),
    Self = self(),
    Tracer = spawn(fun() -> tracer(0, 0, 0) end),
    Scanner = spawn(fun() ->
                      receive go -> ok end,
                      T0 = erlang:monotonic_time(microsecond),
                      S = binscope_collector:snapshot(#{detail => Detail, workers => Workers}),
                      T1 = erlang:monotonic_time(microsecond),
                      [{total_heap_size, TH}, {heap_size, HS}] = process_info(self(), [total_heap_size, heap_size]),
                      {garbage_collection_info, GI} = process_info(self(), garbage_collection_info),
                      Used = HS + proplists:get_value(old_heap_size, GI) + proplists:get_value(mbuf_size, GI),
                      Self ! {done, length(maps:get(procs, S)), TH, Used, T1 - T0}
                  end),
    erlang:trace(Scanner, true, [garbage_collection, {tracer, Tracer}]),
    Scanner ! go,
    receive {done, Count, TH, EndUsed, Us} -> ok end,
    timer:sleep(100),
    Tracer ! {get, self()},
    receive {peak, Peak, PeakUsed, GCs} -> ok end,
    W = erlang:system_info(wordsize),
    Mib = fun(Words) -> Words * W / 1048576 end,
    io:format("otp ~s detail ~p workers ~p procs ~p: heap blocks peak ~.1f MiB (end ~.1f), words in use peak ~.1f MiB (end ~.1f), ~p GCs, scan ~p ms~n",
              [erlang:system_info(otp_release), Detail, Workers, Count, Mib(max(Peak, TH)), Mib(TH),
               Mib(max(PeakUsed, EndUsed)), Mib(EndUsed), GCs, Us div 1000]),
    [P ! stop || P <- Pids],
    halt().

%% Block sizes at every GC event; words in use (young + old heap + fragments) as each GC
%% starts (the most the process had allocated and not yet collected).
tracer(Peak, PeakUsed, GCs) ->
    receive
        {trace, _, Ev, Info} when Ev =:= gc_minor_start; Ev =:= gc_major_start;
                                  Ev =:= gc_minor_end; Ev =:= gc_major_end ->
            G = fun(K) -> proplists:get_value(K, Info, 0) end,
            Size = G(heap_block_size) + G(old_heap_block_size) + G(mbuf_size),
            Start = Ev =:= gc_minor_start orelse Ev =:= gc_major_start,
            Used = case Start of
                       true -> G(heap_size) + G(old_heap_size) + G(mbuf_size);
                       false -> 0
                   end,
            tracer(max(Peak, Size), max(PeakUsed, Used), GCs + case Start of true -> 1; false -> 0 end);
        {get, From} -> From ! {peak, Peak, PeakUsed, GCs};
        _ -> tracer(Peak, PeakUsed, GCs)
    end.
