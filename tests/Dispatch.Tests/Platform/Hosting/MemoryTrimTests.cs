using Dispatch.Platform.Hosting;
using Serilog;

namespace Dispatch.Tests.Platform.Hosting;

/// <summary>
/// When <see cref="MemoryTrim"/> collects: once after a surge of connections has ended, once when the process goes quiet
/// after connections, never in steady load; and when its timer sleeps (quiet, nothing to trim) and wakes (a connection).
/// The timer is given no period here: each test looks by hand.
/// </summary>
public sealed class MemoryTrimTests
{
    private static readonly ILogger Log = new LoggerConfiguration().CreateLogger();

    // The heap as the trim sees it: constant unless a test says otherwise (the test process's own GC heap moves with
    // whatever other tests allocate).
    private static readonly Func<long> NoGrowth = () => 0;

    [Fact]
    public void Trims_once_when_a_surge_has_fallen_back_and_not_in_steady_load()
    {
        var open = 12;
        var native = 0;
        using var trim = new MemoryTrim(() => open, Timeout.InfiniteTimeSpan, Log, trimNative: () => native++, heapBytes: NoGrowth);

        Assert.False(trim.Check());
        open = MemoryTrim.MinimumSurge - 1;            // not a surge
        Assert.False(trim.Check());
        open = 12;
        Assert.False(trim.Check());

        open = 5000;                                   // a flood
        Assert.False(trim.Check());
        open = 2000;                                   // still more than a quarter of it
        Assert.False(trim.Check());
        open = 1200;                                   // within a quarter of the surge over the level it started from
        Assert.True(trim.Check());
        Assert.Equal(1, trim.Trims);
        Assert.Equal(1, native);                       // the collection, then malloc_trim
        Assert.False(trim.Check());                    // once: the level is taken again from here
        open = 400;                                    // falling, but not yet to a quarter of what the trim left
        Assert.False(trim.Check());
        open = 40;                                     // the flood's last quarter gone too: what it held is trimmed
        Assert.True(trim.Check());
        Assert.Equal(2, trim.Trims);
        Assert.False(trim.Check());
        open = 12;                                     // a quarter of 40, but a fall of fewer than SmallSurge
        Assert.False(trim.Check());
        open = 40;
        Assert.False(trim.Check());
        Assert.Equal(2, trim.Trims);
        Assert.True(trim.Armed);                       // connections are open: it keeps looking
    }

    // The worker's transport keeps the blocks its connections gave back (TransportBlockPool); a flood's stalled readers
    // left 90 MB of them, which no collection could free while the pool held them.
    [Fact]
    public void Each_trim_first_lets_go_of_what_pools_keep()
    {
        var open = 0;
        var released = 0;
        using var trim = new MemoryTrim(() => open, Timeout.InfiniteTimeSpan, Log, trimNative: () => { }, heapBytes: NoGrowth, release: () => ++released);

        open = 5000;
        Assert.False(trim.Check());
        Assert.Equal(0, released);
        open = 20;                                     // the surge has ended
        Assert.True(trim.Check());
        Assert.Equal(1, released);
        open = 0;
        Assert.True(trim.Check());                     // quiet after connections
        Assert.Equal(2, released);
        Assert.False(trim.Check());                    // nothing since: no trim, nothing let go
        Assert.Equal(2, released);
    }

    // Seen in bench/flood.sh: the end of a flood of stalled TLS readers was seen at 896 of 3,584 connections still open,
    // trimmed there, and the rest closed a second later; the worker kept 140 MiB (52 before the flood) with its site's
    // good client still coming and going, so it never went quiet.
    [Fact]
    public void The_connections_a_surge_trim_left_open_are_trimmed_again_once_they_have_closed()
    {
        var open = 3;
        using var trim = new MemoryTrim(() => open, Timeout.InfiniteTimeSpan, Log, trimNative: () => { }, heapBytes: NoGrowth);
        Assert.False(trim.Check());
        open = 3584;
        Assert.False(trim.Check());
        open = 896;
        Assert.True(trim.Check());
        open = 2;
        Assert.True(trim.Check());
        Assert.Equal(2, trim.Trims);
        for (var i = 0; i < 5; i++)
        {
            open = i % 2 == 0 ? 1 : 3;                 // the good client, coming and going: no more trims
            Assert.False(trim.Check());
        }

        Assert.Equal(2, trim.Trims);

        // A new surge from there is a surge again; a fall after its trim counts from the level the trim left, also
        // across a rise too small to be a surge; each fall is trimmed once, so a few trims end any surge.
        open = 900;
        Assert.False(trim.Check());
        open = 200;
        Assert.True(trim.Check());
        open = 250;
        Assert.False(trim.Check());
        open = 40;
        Assert.True(trim.Check());
        Assert.Equal(4, trim.Trims);
        open = 9;                                      // a quarter of 40, but a fall of fewer than SmallSurge
        Assert.False(trim.Check());
        Assert.Equal(4, trim.Trims);
    }

    [Fact]
    public void A_surge_already_under_way_at_the_first_look_counts_from_no_connection()
    {
        var open = 5000;
        using var trim = new MemoryTrim(() => open, Timeout.InfiniteTimeSpan, Log, trimNative: () => { }, heapBytes: NoGrowth);
        Assert.False(trim.Check());
        open = 3;
        Assert.True(trim.Check());
    }

    [Fact]
    public void A_surge_between_two_looks_is_seen_through_the_peak()
    {
        var open = 1;
        var peak = 1;
        using var trim = new MemoryTrim(() => open, Timeout.InfiniteTimeSpan, Log, () => peak, () => { }, NoGrowth);
        Assert.False(trim.Check());

        // 5000 connections came and went between two looks: only the peak saw them. The fall is seen once a whole
        // period has passed without them.
        peak = 5000;
        open = 2;
        Assert.False(trim.Check());
        peak = 2;
        Assert.True(trim.Check());

        // Without the peak, the same looks see nothing to trim.
        using var blind = new MemoryTrim(() => open, Timeout.InfiniteTimeSpan, Log, trimNative: () => { }, heapBytes: NoGrowth);
        Assert.False(blind.Check());
        Assert.False(blind.Check());
    }

    [Fact]
    public void A_flood_whose_count_dips_at_the_looks_is_trimmed_once_it_has_ended_not_while_it_goes_on()
    {
        // A dispatcher's TLS flood (bench/flood.sh): handshakes in flight come and go many times a second, up to a
        // couple of hundred, and a look may fall in a lull. Judged by the count at the look alone, it trimmed (a full,
        // blocking collection) every few seconds of the flood.
        var open = 0;
        var peak = 0;
        var heap = 20L << 20;
        using var trim = new MemoryTrim(() => open, Timeout.InfiniteTimeSpan, Log, () => peak, () => { }, () => heap);
        for (var second = 0; second < 20; second++)
        {
            peak = 200 + (second % 3 * 30);
            open = second % 2 == 0 ? 1 : 150;
            heap += 10L << 20;
            Assert.False(trim.Check());
        }

        // The flood ended: a whole period within a quarter of its floor.
        peak = open = 1;
        Assert.True(trim.Check());
        Assert.Equal(1, trim.Trims);
    }

    [Fact]
    public void A_quiet_process_trims_once_then_stops_its_timer_until_a_connection_wakes_it()
    {
        var open = 0;
        var peak = 0;
        var native = 0;
        using var trim = new MemoryTrim(() => open, Timeout.InfiniteTimeSpan, Log, () => peak, () => native++, NoGrowth);
        Assert.True(trim.Armed);

        // Quiet from the start: what the start allocated is trimmed, and the timer stops.
        Assert.True(trim.Check());
        Assert.False(trim.Armed);
        Assert.Equal(1, native);
        // A look that was already due (a timer callback in flight): nothing to trim, still asleep.
        Assert.False(trim.Check());
        Assert.False(trim.Armed);

        // A connection wakes it; a second Wake while it runs changes nothing.
        trim.Wake();
        Assert.True(trim.Armed);
        trim.Wake();
        Assert.True(trim.Armed);

        // Three connections came and went before the next look: not quiet yet (something happened since the last look).
        peak = 3;
        Assert.False(trim.Check());
        Assert.True(trim.Armed);
        // A whole period with nothing: quiet after connections, so one trim, and asleep again.
        peak = 0;
        Assert.True(trim.Check());
        Assert.False(trim.Armed);
        Assert.Equal(2, trim.Trims);
        Assert.Equal(2, native);
    }

    [Fact]
    public void A_process_serving_steadily_below_a_surge_never_trims_and_keeps_looking()
    {
        var open = 32;
        using var trim = new MemoryTrim(() => open, Timeout.InfiniteTimeSpan, Log, () => open, () => { }, NoGrowth);
        for (var i = 0; i < 100; i++)
        {
            open = 20 + (i % 13);
            Assert.False(trim.Check());
            Assert.True(trim.Armed);
        }

        Assert.Equal(0, trim.Trims);
    }

    [Fact]
    public void A_connection_that_arrives_while_the_timer_stops_keeps_it_running()
    {
        // The look sees no connection, decides to sleep, and looks again once the timer is stopped: by then one came
        // (its Wake found the timer still running and returned), so the timer runs on.
        var looks = 0;
        using var trim = new MemoryTrim(() => looks++ == 0 ? 0 : 1, Timeout.InfiniteTimeSpan, Log, trimNative: () => { }, heapBytes: NoGrowth);
        Assert.True(trim.Check());                     // quiet after the start: trimmed
        Assert.True(trim.Armed);                       // but a connection is open now: still looking
    }

    [Fact]
    public void The_gauge_wakes_the_trim_on_the_first_connection_after_a_quiet_spell()
    {
        var gauge = new ConnectionGauge();
        using var trim = new MemoryTrim(() => gauge.Open, Timeout.InfiniteTimeSpan, Log, gauge.TakePeak, () => { }, NoGrowth);
        gauge.Busy = trim.Wake;
        Assert.True(trim.Check());
        Assert.False(trim.Armed);

        gauge.Enter();
        Assert.True(trim.Armed);
        gauge.Leave();
        Assert.False(trim.Check());                    // it came and went since the last look
        Assert.True(trim.Check());                     // then a quiet look: trimmed, asleep
        Assert.False(trim.Armed);
        Assert.Equal(2, trim.Trims);
    }

    [Fact]
    public void Waking_a_disposed_trim_does_nothing()
    {
        var trim = new MemoryTrim(() => 0, Timeout.InfiniteTimeSpan, Log, trimNative: () => { }, heapBytes: NoGrowth);
        Assert.True(trim.Check());
        trim.Dispose();
        trim.Wake();
        Assert.False(trim.Armed);
        Assert.False(trim.Check());
    }

    // What a dispatcher's TLS handshakes leave is mostly native (OpenSSL, malloc arenas): a small surge there grew its
    // RSS 33 MiB with its GC heap far below HeapGrowth, and was never trimmed while its sites' good clients kept it from
    // going quiet. 256 MiB touched, so that what other tests free meanwhile cannot hide it.
    [Fact]
    public unsafe void The_memory_watched_by_default_includes_what_native_code_allocated()
    {
        const int Size = 256 << 20;
        var before = MemoryTrim.AnonymousOrHeapBytes();
        var block = System.Runtime.InteropServices.NativeMemory.Alloc(Size);
        try
        {
            new Span<byte>(block, Size).Fill(1);
            var grown = MemoryTrim.AnonymousOrHeapBytes() - before;
            Assert.True(grown >= Size / 2, $"grew {grown >> 20} MiB after 256 MiB of native memory was touched");
        }
        finally
        {
            System.Runtime.InteropServices.NativeMemory.Free(block);
        }
    }

    // A dispatcher starts at about 5 MiB of anonymous memory. After a TLS flood from one address (a few hundred
    // handshakes at once, never MinimumSurge) it kept 29 MiB for as long as the site's good client kept it from going
    // quiet: 24 MiB of growth, below HeapGrowth, was not worth a trim (bench/flood.sh, docs/floods.md). What is worth
    // one is measured against the process's own size now: growth of as much as it held after its last trim, at least
    // MinimumHeapGrowth (the 4 MiB gen 0 budget a worker's good client fills is not), at most HeapGrowth.
    [Fact]
    public void A_small_surge_that_grew_a_small_process_several_times_over_is_trimmed()
    {
        var open = 1;
        var heap = 5L << 20;
        using var trim = new MemoryTrim(() => open, Timeout.InfiniteTimeSpan, Log, () => open, () => { }, () => heap);
        Assert.False(trim.Check());

        // Forty connections that filled the gen 0 budget (4 MiB): below MinimumHeapGrowth, not worth a trim.
        open = 41;
        heap += 4L << 20;
        Assert.False(trim.Check());
        open = 1;
        Assert.False(trim.Check());
        Assert.Equal(0, trim.Trims);

        // A few hundred handshakes that left it 24 MiB larger: trimmed once they have gone.
        open = 200;
        heap = 29L << 20;
        Assert.False(trim.Check());
        open = 1;
        Assert.True(trim.Check());
        Assert.Equal(1, trim.Trims);
    }

    [Fact]
    public void A_small_surge_trims_once_it_has_fallen_back_only_if_the_heap_grew()
    {
        var open = 2;
        var heap = 10L << 20;
        using var trim = new MemoryTrim(() => open, Timeout.InfiniteTimeSpan, Log, () => open, () => { }, () => heap);
        Assert.False(trim.Check());

        // Two hundred stalled readers came and went; the heap stayed where it was: nothing worth a trim.
        open = 200;
        Assert.False(trim.Check());
        open = 2;
        Assert.False(trim.Check());

        // The same, but they left the heap 40 MiB larger: trimmed once they have gone (and not while they are there).
        open = 200;
        heap += 40L << 20;
        Assert.False(trim.Check());
        open = 2;
        Assert.True(trim.Check());
        Assert.Equal(1, trim.Trims);

        // From where the trim left the heap: growth below HeapGrowth is not worth one.
        open = 200;
        heap += MemoryTrim.HeapGrowth - 1;
        Assert.False(trim.Check());
        open = 2;
        Assert.False(trim.Check());
        Assert.Equal(1, trim.Trims);

        // Swings below SmallSurge never count, however the heap grows (steady load allocates).
        var steady = 2;
        var grown = 0L;
        using var busy = new MemoryTrim(() => steady, Timeout.InfiniteTimeSpan, Log, () => steady, () => { }, () => grown);
        for (var i = 0; i < 50; i++)
        {
            steady = 1 + (i % (MemoryTrim.SmallSurge - 1));   // 1 to 31 over a floor of 0
            grown += 100L << 20;
            Assert.False(busy.Check());
        }
    }
}
