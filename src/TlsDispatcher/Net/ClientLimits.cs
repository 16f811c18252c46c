using System.Net;
using Dispatch.Wire.Payloads;
using Serilog;

namespace Dispatch.TlsDispatcher.Net;

/// <summary>
/// The dispatcher's limits per client address and in all (config: <c>dispatcher.limits</c>): connections it holds at
/// once (reading a request head or ClientHello, in a TLS handshake, or pumping terminated TLS) and new connections per
/// second (a token bucket of one second's worth). A connection beyond them is refused at once; refusals are logged at
/// most once per 10 s, with their count and the address refused most: the first at once, those that follow within the
/// 10 s when they are up (a timer), so that every refusal is counted in some line even if none comes after.
/// </summary>
internal sealed class ClientLimits : IDisposable
{
    private readonly long _logEveryMs;
    private readonly Timer _flush;
    private bool _flushPending;
    private readonly Func<ClientLimitSettings> _settings;
    private readonly ILogger _log;
    private readonly Lock _gate = new();
    private readonly Dictionary<IPAddress, Entry> _addresses = [];
    private int _open;
    private double _globalTokens = -1;
    private long _globalStamp;
    private long _lastLog;
    private int _refusedPerAddress;
    private int _refusedGlobal;
    private readonly Dictionary<IPAddress, int> _refusedBy = [];

    /// <param name="logEvery">The least time between two lines of refusals (10 s unless given: tests).</param>
    public ClientLimits(Func<ClientLimitSettings> settings, ILogger log, TimeSpan? logEvery = null)
    {
        _settings = settings;
        _log = log;
        _logEveryMs = (long)(logEvery ?? TimeSpan.FromSeconds(10)).TotalMilliseconds;
        _flush = new Timer(_ => Flush());
    }

    public void Dispose() => _flush.Dispose();

    /// <summary>Why a connection was refused.</summary>
    public enum Refusal
    {
        None,
        PerAddress,
        Global,
    }

    /// <summary>Counts a new connection from <paramref name="address"/>; when it is refused nothing is counted (do not <see cref="Release"/>).</summary>
    public Refusal TryAdmit(IPAddress? address)
    {
        var s = _settings();
        var now = Environment.TickCount64;
        Refusal refusal;
        lock (_gate)
        {
            refusal = Check(s, address, now);
            if (refusal == Refusal.None)
            {
                _open++;
                if (address is not null)
                    _addresses[address].Open++;
            }
            else
            {
                if (refusal == Refusal.PerAddress)
                    _refusedPerAddress++;
                else
                    _refusedGlobal++;
                if (address is not null)
                    _refusedBy[address] = _refusedBy.GetValueOrDefault(address) + 1;
            }
        }

        if (refusal != Refusal.None)
            MaybeLog(now);
        return refusal;
    }

    /// <summary>The connections <paramref name="address"/> has open here now (what <see cref="ConnectionTurns"/> orders by).</summary>
    public int OpenFrom(IPAddress address)
    {
        lock (_gate)
            return _addresses.TryGetValue(address, out var e) ? e.Open : 0;
    }

    public void Release(IPAddress? address)
    {
        lock (_gate)
        {
            _open--;
            if (address is not null && _addresses.TryGetValue(address, out var e))
            {
                e.Open--;
                if (e.Open <= 0 && e.Tokens >= _settings().PerAddressPerSecond)
                    _addresses.Remove(address);
            }
        }
    }

    private Refusal Check(ClientLimitSettings s, IPAddress? address, long now)
    {
        if (s.GlobalConnections > 0 && _open >= s.GlobalConnections)
            return Refusal.Global;
        if (s.GlobalPerSecond > 0 && !Take(ref _globalTokens, ref _globalStamp, s.GlobalPerSecond, now))
            return Refusal.Global;
        if (address is null)
            return Refusal.None;
        if (!_addresses.TryGetValue(address, out var e))
            _addresses[address] = e = new Entry { Tokens = -1 };
        if (s.PerAddressConnections > 0 && e.Open >= s.PerAddressConnections)
            return Refusal.PerAddress;
        if (s.PerAddressPerSecond > 0 && !Take(ref e.Tokens, ref e.Stamp, s.PerAddressPerSecond, now))
            return Refusal.PerAddress;
        return Refusal.None;
    }

    /// <summary>Token bucket holding at most one second's worth (<paramref name="rate"/>), refilled continuously.</summary>
    private static bool Take(ref double tokens, ref long stamp, int rate, long now)
    {
        if (tokens < 0)
        {
            tokens = rate;
            stamp = now;
        }

        tokens = Math.Min(rate, tokens + ((now - stamp) * rate / 1000.0));
        stamp = now;
        if (tokens < 1)
            return false;
        tokens--;
        return true;
    }

    private void MaybeLog(long now)
    {
        int perAddress, global;
        KeyValuePair<IPAddress, int> top;
        lock (_gate)
        {
            if (_lastLog != 0 && now - _lastLog < _logEveryMs)
            {
                // Within the interval: reported when it is up (unless a later refusal reports it first).
                if (!_flushPending)
                {
                    _flushPending = true;
                    _flush.Change(_lastLog + _logEveryMs - now, Timeout.Infinite);
                }

                return;
            }

            _flushPending = false;
            perAddress = _refusedPerAddress;
            global = _refusedGlobal;
            top = _refusedBy.MaxBy(kv => kv.Value);
            _refusedPerAddress = _refusedGlobal = 0;
            _refusedBy.Clear();
            _lastLog = Math.Max(1, now);
        }

        _log.Warning(
            "Refused {Count} connection(s) over the client limits since the last report ({PerAddress} over a per-address limit, {Global} over a global one); most from {Address} ({Top})",
            perAddress + global, perAddress, global, top.Key?.ToString() ?? "-", top.Value);
    }

    // The interval after a line is up: what was refused during it, if anything.
    private void Flush()
    {
        lock (_gate)
        {
            _flushPending = false;
            if (_refusedPerAddress + _refusedGlobal == 0)
                return;
        }

        MaybeLog(Environment.TickCount64);
    }

    private sealed class Entry
    {
        public int Open;
        public double Tokens;
        public long Stamp;
    }
}
