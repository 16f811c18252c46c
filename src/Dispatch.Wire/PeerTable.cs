namespace Dispatch.Wire;

/// <summary>
/// One channel end's table bound to its handlers: (message type, phase, exact descriptor count,
/// handler). <see cref="DispatchAsync"/> refuses with a <see cref="WireException"/> — the message's
/// descriptors are closed when the caller disposes it — a type the end does not accept, a type out of
/// its phase, a wrong descriptor count and a malformed payload, before any handler runs. Each process
/// ends the less privileged peer on that exception, as it does on any malformed message.
/// </summary>
public sealed class PeerTable
{
    private readonly Dictionary<MessageType, Func<IpcMessage, ValueTask>> _handlers = [];

    public PeerTable(PeerSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        Spec = spec;
    }

    public PeerSpec Spec { get; }

    /// <summary>Binds the handler of <typeparamref name="T"/>, which must be a row of the spec; the descriptors stay the message's until taken.</summary>
    public PeerTable On<T>(Action<T, ReceivedDescriptors> handler)
        where T : IWireMessage<T>
    {
        ArgumentNullException.ThrowIfNull(handler);
        return OnAsync<T>((message, descriptors) =>
        {
            handler(message, descriptors);
            return ValueTask.CompletedTask;
        });
    }

    /// <summary>Binds an asynchronous handler of <typeparamref name="T"/>, which must be a row of the spec.</summary>
    public PeerTable OnAsync<T>(Func<T, ReceivedDescriptors, ValueTask> handler)
        where T : IWireMessage<T>
    {
        ArgumentNullException.ThrowIfNull(handler);
        if (!Spec.Rules.Any(r => r.Type == T.Type))
            throw new InvalidOperationException($"{Spec.Name}: {T.Type} is not in its table");
        if (!_handlers.TryAdd(T.Type, message => handler(message.Decode<T>(), message.Descriptors)))
            throw new InvalidOperationException($"{Spec.Name}: {T.Type} bound twice");
        return this;
    }

    /// <summary>Checks that every row of the spec has its handler (a table that could refuse a message it declares is a bug).</summary>
    public PeerTable Complete()
    {
        var missing = Spec.Rules.Where(r => !_handlers.ContainsKey(r.Type)).Select(r => r.Type.ToString()).ToList();
        if (missing.Count > 0)
            throw new InvalidOperationException($"{Spec.Name}: no handler for {string.Join(", ", missing)}");
        return this;
    }

    /// <summary>The message, checked against the table in <paramref name="phase"/>, decoded, and handed to its handler.</summary>
    /// <exception cref="WireException">Not accepted: unknown type, out of phase, wrong descriptor count, malformed.</exception>
    public ValueTask DispatchAsync(IpcMessage message, PeerPhase phase)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (!Enum.IsDefined(message.Type))
            throw new WireException($"{Spec.Sender} sent an unknown message type {(ushort)message.Type}");
        if (!Spec.Allows(message.Type, phase))
        {
            throw new WireException(Spec.Rules.Any(r => r.Type == message.Type)
                ? $"{Spec.Sender} may not send {message.Type} while {phase.ToString().ToLowerInvariant()}"
                : $"{Spec.Sender} may not send {message.Type}");
        }

        if (!_handlers.TryGetValue(message.Type, out var handler))
            throw new InvalidOperationException($"{Spec.Name}: no handler for {message.Type}");
        return handler(message);
    }
}
