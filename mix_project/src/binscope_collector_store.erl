%% The collector's store binaries (see binscope_collector): where Binscope's NIF is loaded on the
%% node, the calibration of its resource binaries' listed addresses, and the resolution of the
%% binaries a process lists to store entries. OTP only, like every collector module.
-module(binscope_collector_store).

-export([probe/1, resolve_store/4, may_hold_store/2, may_hold_store/3, store_sizes_patched/0,
         store_loaded/0]).
-export([calibration/0, calibration_status/0, check_calibration/2]).

-include("binscope_collector.hrl").

%% Bytes behind the calibration probe's resource binary (PROBE_BYTES in the NIF's collector.rs).
-define(PROBE_PAYLOAD, 1).

%% What a scan needs to tell the lists that may hold store binaries (may_hold_store/2), read
%% once before it: {MagicSize, Any} from the calibration, or undefined (none can).
probe({_Offset, MagicSize}) -> {MagicSize, store_sizes_patched()};
probe(undefined) -> undefined.

%% Store binaries: when Binscope's NIF is loaded here, rewrite their listed (magic binary)
%% address and 72-byte size into the store entry's key and real size. Candidates: [{Index,
%% Bins}] of the records (1-based) whose lists may hold one, in order, found by the scan as each
%% list arrived (may_hold_store/2).
resolve_store(Records, [], _Calibration, _Mark) ->
    Records;
resolve_store(Records, Candidates, {Offset, MagicSize}, Mark) ->
    Idx = [I || {I, _} <- Candidates],
    Lists = [Bins || {_, Bins} <- Candidates],
    Resolved = ?NATIVE:collector_resolve(Lists, Offset, MagicSize, Mark),
    replace(Records, 1, maps:from_list(lists:zip(Idx, Resolved)), []).

may_hold_store(_Bins, undefined) -> false;
may_hold_store(Bins, {Size, Any}) -> may_hold_store(Bins, Size, Any).

%% Only lists holding an entry of the probe's listed size (its magic binary's: 56 bytes on the
%% project's OTP 25, 27 and 29 builds) can hold store binaries, unless they may be listed at
%% their own size: under the GC pressure patch (Any), or where the VM itself lists resource
%% binaries at their payload's size (the probe listed at its ?PROBE_PAYLOAD bytes); then any
%% non-empty list may hold one, and the NIF matches sizes against the entries.
may_hold_store([], _Size, _Any) -> false;
may_hold_store(_Bins, _Size, true) -> true;
may_hold_store(_Bins, ?PROBE_PAYLOAD, _Any) -> true;
may_hold_store(Bins, Size, false) -> lists:keymember(Size, 2, Bins).

%% Whether store binaries may list at their real size here: Binscope.Store.GcPressure's patch
%% was calibrated on this node (binaries made while it was enabled keep their size).
store_sizes_patched() ->
    try element(1, ?NATIVE:gc_pressure_state())
    catch _:_ -> false
    end.

replace([], _I, _Resolved, Acc) ->
    binscope_collector:rev(Acc, []);
replace([R | Rest], I, Resolved, Acc) ->
    case Resolved of
        #{I := Bins} -> replace(Rest, I + 1, Resolved, [binaries(R, Bins) | Acc]);
        _ -> replace(Rest, I + 1, Resolved, [R | Acc])
    end.

binaries(#binscope_basic{} = R, Bins) -> R#binscope_basic{binaries = Bins};
binaries(#binscope_process{} = R, Bins) -> R#binscope_process{binaries = Bins}.

store_loaded() ->
    erlang:module_loaded(?NATIVE) andalso erlang:function_exported(?NATIVE, collector_probe, 0).

%% Store binaries are resolved only by a NIF that has the handle mark (an older one on a remote
%% node could credit a reused address to the wrong process): without it they stay as listed.
resolvable() ->
    store_loaded() andalso erlang:function_exported(?NATIVE, collector_mark, 0).

%% {Offset, MagicSize} or undefined. A fresh process holding two probe resource binaries shows
%% their listed addresses and sizes; the NIF returned the resources' own addresses. The
%% calibration checks itself: both probes must sit at the same distance from their listed
%% magic binaries, with the same listed size, or store binaries are not resolved at all (and
%% calibration_status/0 says why) rather than resolved wrongly.
calibration() ->
    case calibration_status() of
        {ok, C} -> C;
        _ -> undefined
    end.

%% {ok, {Offset, MagicSize}} | {error, Reason} | not_loaded, cached once it succeeded.
calibration_status() ->
    case resolvable() of
        false -> not_loaded;
        true ->
            Key = {binscope_collector, calibration},
            case persistent_term:get(Key, none) of
                none ->
                    Status = calibrate(),
                    case Status of
                        {ok, C} -> persistent_term:put(Key, C);
                        _ -> ok
                    end,
                    Status;
                C -> {ok, C}
            end
    end.

calibrate() ->
    Parent = self(),
    Ref = make_ref(),
    {Pid, MRef} =
        spawn_monitor(fun() ->
                              {Bin1, Addr1} = ?NATIVE:collector_probe(),
                              {Bin2, Addr2} = ?NATIVE:collector_probe(),
                              {binary, Listed} = erlang:process_info(self(), binary),
                              Parent ! {Ref, Listed, [Addr1, Addr2]},
                              byte_size(Bin1) + byte_size(Bin2)
                      end),
    receive
        {Ref, Listed, Addrs} ->
            erlang:demonitor(MRef, [flush]),
            check_calibration(Listed, Addrs);
        {'DOWN', MRef, process, Pid, Reason} ->
            {error, {probe_died, Reason}}
    after 5000 ->
            exit(Pid, kill),
            {error, probe_timeout}
    end.

%% Each probe object's header is the nearest listed binary below it (within 256 bytes: another
%% probe allocated just before it may be listed within reach too); both must sit at the same
%% distance and be listed at the same size.
check_calibration(Listed, Addrs) ->
    Pairs = [nearest_below(Obj, Listed) || Obj <- Addrs],
    case Pairs of
        [{ok, C}, {ok, C}] -> {ok, C};
        _ -> {error, {calibration_mismatch, length(Listed), Pairs}}
    end.

nearest_below(Obj, Listed) ->
    case lists:sort([{Obj - L, Size} || {L, Size, _} <- Listed, L < Obj, Obj - L =< 256]) of
        [C | _] -> {ok, C};
        [] -> none
    end.
