using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>
/// The dispatcher's TLS 1.3 session-ticket keys and the ticket format. Keys live in this process only: random at
/// start, replaced every <see cref="RotateEvery"/> (the previous one still opens tickets), never written anywhere.
/// A ticket is <c>key id (4) | nonce (12) | AES-256-GCM(version 1, suite, issue time, age_add, PSK, vhost) | tag</c>,
/// the key id as additional data; it opens only at the vhost it was issued for and only within
/// <see cref="Lifetime"/> of its issue. Thread-safe.
/// </summary>
public sealed class SessionTicketKeys
{
    /// <summary>How long a ticket is good for (advertised as ticket_lifetime).</summary>
    public static readonly TimeSpan Lifetime = TimeSpan.FromHours(1);

    /// <summary>How often the issuing key is replaced.</summary>
    public static readonly TimeSpan RotateEvery = TimeSpan.FromHours(1);

    private const int KeyIdLength = 4;
    private const int NonceLength = 12;
    private const int TagLength = 16;
    private readonly Lock _sync = new();
    private readonly Func<DateTimeOffset> _clock;
    private Key _current;
    private Key? _previous;

    /// <summary>Fresh keys; <paramref name="clock"/> for tests (default: the system clock).</summary>
    public SessionTicketKeys(Func<DateTimeOffset>? clock = null)
    {
        _clock = clock ?? (() => DateTimeOffset.UtcNow);
        _current = NewKey(_clock());
    }

    /// <summary>The keys of this process (one per dispatcher).</summary>
    public static SessionTicketKeys Shared { get; } = new();

    /// <summary>Seals a ticket for <paramref name="vhost"/>.</summary>
    public byte[] Issue(string vhost, int cipherSuite, ReadOnlySpan<byte> psk, uint ageAdd)
    {
        ArgumentNullException.ThrowIfNull(vhost);
        byte[] name = Encoding.ASCII.GetBytes(vhost.ToLowerInvariant());
        if (name.Length > 255 || psk.Length > 255)
            throw new ArgumentException("vhost name or PSK too long");
        DateTimeOffset now = _clock();
        Key key = CurrentKey(now);
        byte[] plaintext = new byte[1 + 2 + 8 + 4 + 1 + psk.Length + 1 + name.Length];
        var p = plaintext.AsSpan();
        p[0] = 1;
        BinaryPrimitives.WriteUInt16BigEndian(p[1..], (ushort)cipherSuite);
        BinaryPrimitives.WriteInt64BigEndian(p[3..], now.ToUnixTimeSeconds());
        BinaryPrimitives.WriteUInt32BigEndian(p[11..], ageAdd);
        p[15] = (byte)psk.Length;
        psk.CopyTo(p[16..]);
        p[16 + psk.Length] = (byte)name.Length;
        name.CopyTo(p[(17 + psk.Length)..]);

        byte[] ticket = new byte[KeyIdLength + NonceLength + plaintext.Length + TagLength];
        BinaryPrimitives.WriteUInt32BigEndian(ticket, key.Id);
        RandomNumberGenerator.Fill(ticket.AsSpan(KeyIdLength, NonceLength));
        using (var gcm = new AesGcm(key.Bytes, TagLength))
            gcm.Encrypt(ticket.AsSpan(KeyIdLength, NonceLength), plaintext, ticket.AsSpan(KeyIdLength + NonceLength, plaintext.Length), ticket.AsSpan(ticket.Length - TagLength), ticket.AsSpan(0, KeyIdLength));
        CryptographicOperations.ZeroMemory(plaintext);
        return ticket;
    }

    /// <summary>Opens a ticket: true (with its suite and PSK) only for one of our keys, the same vhost and within its lifetime.</summary>
    public bool TryOpen(ReadOnlySpan<byte> ticket, string vhost, out int cipherSuite, out byte[] psk)
    {
        ArgumentNullException.ThrowIfNull(vhost);
        cipherSuite = 0;
        psk = [];
        if (ticket.Length < KeyIdLength + NonceLength + TagLength + 18)
            return false;
        DateTimeOffset now = _clock();
        uint id = BinaryPrimitives.ReadUInt32BigEndian(ticket);
        Key? key;
        lock (_sync)
            key = _current.Id == id ? _current : _previous?.Id == id ? _previous : null;
        if (key is null)
            return false;
        byte[] plaintext = new byte[ticket.Length - KeyIdLength - NonceLength - TagLength];
        try
        {
            using (var gcm = new AesGcm(key.Bytes, TagLength))
                gcm.Decrypt(ticket.Slice(KeyIdLength, NonceLength), ticket[(KeyIdLength + NonceLength)..^TagLength], ticket[^TagLength..], plaintext, ticket[..KeyIdLength]);
        }
        catch (AuthenticationTagMismatchException)
        {
            return false;
        }

        var p = plaintext.AsSpan();
        int pskLength = p[15];
        if (p[0] != 1 || 16 + pskLength + 1 > p.Length || 17 + pskLength + p[16 + pskLength] != p.Length)
            return false;
        DateTimeOffset issued = DateTimeOffset.FromUnixTimeSeconds(BinaryPrimitives.ReadInt64BigEndian(p[3..]));
        string name = Encoding.ASCII.GetString(p[(17 + pskLength)..]);
        bool valid = string.Equals(name, vhost, StringComparison.OrdinalIgnoreCase) && now >= issued && now - issued <= Lifetime;
        if (valid)
        {
            cipherSuite = BinaryPrimitives.ReadUInt16BigEndian(p[1..]);
            psk = p.Slice(16, pskLength).ToArray();
        }

        CryptographicOperations.ZeroMemory(plaintext);
        return valid;
    }

    private Key CurrentKey(DateTimeOffset now)
    {
        lock (_sync)
        {
            if (now - _current.Created >= RotateEvery)
            {
                _previous = _current;
                _current = NewKey(now);
            }

            return _current;
        }
    }

    private static Key NewKey(DateTimeOffset now)
        => new(BinaryPrimitives.ReadUInt32BigEndian(RandomNumberGenerator.GetBytes(4)), RandomNumberGenerator.GetBytes(32), now);

    private sealed record Key(uint Id, byte[] Bytes, DateTimeOffset Created);
}
