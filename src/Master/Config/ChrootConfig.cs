using Dispatch.Wire.Payloads;

namespace Dispatch.Master.Config;

/// <summary>The pool's chroot (null: none): a private /tmp of <paramref name="TmpBytes"/>, extra paths bound read-only and writable.</summary>
internal sealed record ChrootConfig(ulong TmpBytes, ValueList<string> ExtraReadOnly, ValueList<string> Writable);
