# Issue #11: Dispatch.Protocol split into Dispatch.Wire (the contract) and Dispatch.Platform (the OS).
# The one-to-one part of the namespace mapping, for `sed -E -f` on C# files (scripts/dev/protocol-split.sh
# applies it, then splits the `using` lines of the two namespaces that were divided by type, below).
s/\bDispatch\.Protocol\.Wire\b/Dispatch.Wire/g
s/\bDispatch\.Protocol\.Routing\b/Dispatch.Wire.Payloads/g
s/\bDispatch\.Protocol\.Tls\b/Dispatch.Wire.Tls/g
s/\bDispatch\.Protocol\.Identity\b/Dispatch.Wire.Identity/g
s/\bDispatch\.Protocol\.Modules\b/Dispatch.Platform.Modules/g
# Dispatch.Protocol.Interop: divided by type (qualified names here, `using` lines in protocol-split.sh).
s/\bDispatch\.Protocol\.Interop\.(SysCallException|WireLibc)\b/Dispatch.Wire.Interop.\1/g
s/\bDispatch\.Protocol\.Interop\.(Libc|LibCrypt|NativeLayout|NativeStrings|PathComponents)\b/Dispatch.Platform.Interop.\1/g
# Dispatch.Protocol.Hosting: divided by type.
s/\bDispatch\.Protocol\.Hosting\.(CgroupController|CpuMax|CgroupLimits|CgroupHierarchy|CgroupHost|CgroupException|CgroupTree)\b/Dispatch.Platform.Cgroups.\1/g
s/\bDispatch\.Protocol\.Hosting\.(Chroot|JailProbe|Jail|Landlock)\b/Dispatch.Platform.Confinement.\1/g
s/\bDispatch\.Protocol\.Hosting\.(ChildBootstrap|Spawner|RuntimePaths)\b/Dispatch.Platform.Spawn.\1/g
s/\bDispatch\.Protocol\.Hosting\.(ChildLogFormatter|ConnectionGauge|MemoryTrim|StartupTrace)\b/Dispatch.Platform.Hosting.\1/g
# The channel's structs and calls that only WireLibc declares now (Libc keeps forwarders for the rest).
s/\bLibc\.(IoVec|MsgHdr|CmsgHdr|PollFd|CmsgAlign|CmsgSpace|CmsgLen|SendMsg|RecvMsg|Poll)\b/WireLibc.\1/g
