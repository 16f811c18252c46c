#!/usr/bin/env bash
# Issue #11: the mechanical split of src/Dispatch.Protocol into src/Dispatch.Wire and src/Dispatch.Platform.
#
#   scripts/dev/protocol-split.sh apply [FILE...]
#       Rewrites C# files written against the old namespaces (default: every tracked or untracked .cs file under
#       src/ tests/ fuzz/ bench/ samples/). Run it on a branch that added files with `using Dispatch.Protocol.X;`,
#       then `dotnet format Dispatch.sln` (the new using lines sort differently) and build.
#   scripts/dev/protocol-split.sh move
#       The one-time move itself (git mv of every file, then `apply`), as it was run on branch `wire`.
#
# Mapping (one to one, protocol-split.sed):
#   Dispatch.Protocol.Wire     -> Dispatch.Wire             (src/Dispatch.Wire/)
#   Dispatch.Protocol.Routing  -> Dispatch.Wire.Payloads    (src/Dispatch.Wire/Payloads/)
#   Dispatch.Protocol.Tls      -> Dispatch.Wire.Tls         (src/Dispatch.Wire/Tls/)
#   Dispatch.Protocol.Identity -> Dispatch.Wire.Identity    (src/Dispatch.Wire/Identity/)
#   Dispatch.Protocol.Modules  -> Dispatch.Platform.Modules (src/Dispatch.Platform/Modules/)
# Divided by type (a `using` line becomes the usings of the types the file names):
#   Dispatch.Protocol.Interop  -> Dispatch.Platform.Interop: Libc LibCrypt NativeLayout NativeStrings PathComponents
#                              -> Dispatch.Wire.Interop:     SysCallException (out of Libc.cs), WireLibc (new: the
#                                 channel's own libc calls, moved out of Libc)
#   Dispatch.Protocol.Hosting  -> Dispatch.Platform.Cgroups:     CgroupController CpuMax CgroupLimits CgroupHierarchy
#                                                                CgroupHost CgroupException CgroupTree
#                              -> Dispatch.Platform.Confinement: Jail Landlock Chroot JailProbe
#                              -> Dispatch.Platform.Spawn:       Spawner RuntimePaths ChildBootstrap
#                              -> Dispatch.Platform.Hosting:     ChildLogFormatter ConnectionGauge MemoryTrim StartupTrace
# What `apply` does not do alone (the compiler says where):
#   - Libc.MsgHdr, Libc.IoVec, Libc.CmsgHdr, Libc.PollFd, Libc.Cmsg{Align,Space,Len}, Libc.SendMsg, Libc.RecvMsg,
#     Libc.Poll are WireLibc's now (WireLibc.MsgHdr, ...): the .sed renames them, but a file that already uses the new
#     namespaces needs `using Dispatch.Wire.Interop;` by hand. Every other member WireLibc took (close, fcntl, write,
#     pread, lseek, memfd_create, socketpair, errno, the socket/seal constants) is still Libc.X (Libc.Wire.cs).
#   - A new file under src/Dispatch.Protocol/<dir>/ or tests/Dispatch.Tests/Protocol/ goes to its folder in the new
#     layout (see `move`) with its namespace line changed to match; `apply` then maps its using lines.
#   - Dispatch.Protocol.dll (the JIT carrier of ProtocolStamp) is Dispatch.Wire.dll; scripts/fuzz.sh instruments
#     Dispatch.Wire.dll and Dispatch.Platform.dll.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=scripts/dev

declare -A groups=(
  [Dispatch.Wire.Interop]='SysCallException|WireLibc'
  [Dispatch.Platform.Interop]='Libc|LibCrypt|NativeLayout|NativeStrings|PathComponents'
  [Dispatch.Platform.Cgroups]='CgroupController|CpuMax|CgroupLimits|CgroupHierarchy|CgroupHost|CgroupException|CgroupTree'
  [Dispatch.Platform.Confinement]='Chroot|JailProbe|Jail|Landlock'
  [Dispatch.Platform.Spawn]='ChildBootstrap|Spawner|RuntimePaths'
  [Dispatch.Platform.Hosting]='ChildLogFormatter|ConnectionGauge|MemoryTrim|StartupTrace'
)
old_of() { case "$1" in Dispatch.Wire.Interop|Dispatch.Platform.Interop) echo Dispatch.Protocol.Interop ;; *) echo Dispatch.Protocol.Hosting ;; esac; }

# The usings a file needs in place of `using <old>;`: those of the groups whose types it names.
usings_for() {
  local file=$1 old=$2 ns out=''
  for ns in "${!groups[@]}"; do
    [ "$(old_of "$ns")" = "$old" ] || continue
    if grep -v '^using ' "$file" | grep -cwE "${groups[$ns]}" >/dev/null; then out+="using $ns;\\n"; fi
  done
  printf '%s' "$out"
}

apply() {
  local f own add
  for f in "$@"; do
    sed -E -i -f "$here/protocol-split.sed" "$f"
    for old in Dispatch.Protocol.Interop Dispatch.Protocol.Hosting; do
      grep -qx "using $old;" "$f" || continue
      add=$(usings_for "$f" "$old")
      sed -i "s/^using ${old//./\\.};\$/${add%\\n}/" "$f"
      # A group that names none of its types (only extension methods, say) would lose its using: say so.
      [ -n "$add" ] || echo "protocol-split: $f: using $old; names none of its types, removed" >&2
    done
    # No file imports its own namespace or one that encloses it.
    own=$(sed -nE 's/^namespace ([A-Za-z.]+);/\1/p' "$f" | head -1)
    while [ -n "$own" ]; do
      sed -i "/^using ${own//./\\.};\$/d" "$f"
      [ "${own%.*}" != "$own" ] && own=${own%.*} || own=''
    done
    sed -i '1{/^$/d}' "$f"
  done
}

move() {
  local p=src/Dispatch.Protocol w=src/Dispatch.Wire f t
  mkdir -p $w/Payloads $w/Tls $w/Identity $w/Interop src/Dispatch.Platform/{Interop,Confinement,Spawn,Cgroups,Modules,Hosting}
  git mv $p/Dispatch.Protocol.csproj src/Dispatch.Platform/Dispatch.Platform.csproj
  for f in $p/Wire/*.cs; do git mv "$f" $w/; done
  for f in $p/Routing/*.cs; do git mv "$f" $w/Payloads/; done
  for f in $p/Tls/*.cs; do git mv "$f" $w/Tls/; done
  git mv $p/Identity/BasicCredentials.cs $w/Identity/
  for f in $p/Interop/*.cs; do git mv "$f" src/Dispatch.Platform/Interop/; done
  for f in $p/Modules/*.cs; do git mv "$f" src/Dispatch.Platform/Modules/; done
  for t in Jail Landlock Chroot JailProbe; do git mv $p/Hosting/$t.cs src/Dispatch.Platform/Confinement/; done
  for t in Spawner ChildBootstrap; do git mv $p/Hosting/$t.cs src/Dispatch.Platform/Spawn/; done
  git mv $p/Hosting/dispatch-openssl.cnf src/Dispatch.Platform/Spawn/
  for t in CgroupHost CgroupTree; do git mv $p/Hosting/$t.cs src/Dispatch.Platform/Cgroups/; done
  for t in MemoryTrim ConnectionGauge StartupTrace ChildLogFormatter; do git mv $p/Hosting/$t.cs src/Dispatch.Platform/Hosting/; done
  # A moved Hosting file names its former siblings without a using: give it one, then map it like any other file.
  for f in src/Dispatch.Platform/{Confinement,Spawn,Cgroups,Hosting}/*.cs; do
    add='using Dispatch.Protocol.Hosting;'
    grep -qx 'using Dispatch.Protocol.Interop;' "$f" || add+='\nusing Dispatch.Protocol.Interop;'
    if grep -q '^using ' "$f"; then sed -i "0,/^using /s//$add\n&/" "$f"; else sed -i "1s/^/$add\n\n/" "$f"; fi
    sed -i "s/^namespace Dispatch\.Protocol\.Hosting;\$/namespace Dispatch.Platform.$(basename "$(dirname "$f")");/" "$f"
  done
  sed -i 's/^namespace Dispatch\.Protocol\.Interop;$/namespace Dispatch.Platform.Interop;/' src/Dispatch.Platform/Interop/*.cs
  # Tests mirror src/.
  local tp=tests/Dispatch.Tests/Protocol tt=tests/Dispatch.Tests
  mkdir -p $tt/Wire/Payloads $tt/Wire/Tls $tt/Wire/Identity $tt/Platform/{Interop,Confinement,Cgroups,Hosting}
  for t in IpcChannelTests PeerTableTests WireTests; do git mv $tp/$t.cs $tt/Wire/; done
  for t in HostMatcherTests ProxyUpstreamTests VhostWebRulesTests; do git mv $tp/$t.cs $tt/Wire/Payloads/; done
  git mv $tp/TlsRecordProtectionTests.cs $tt/Wire/Tls/
  git mv $tp/BasicCredentialsTests.cs $tt/Wire/Identity/
  for t in LibCryptTests NativeLayoutTests; do git mv $tp/$t.cs $tt/Platform/Interop/; done
  for t in JailProbeTests LandlockWarningTests; do git mv $tp/$t.cs $tt/Platform/Confinement/; done
  git mv $tp/CgroupLayoutTests.cs $tt/Platform/Cgroups/
  for t in ChildLogFormatterTests ConnectionGaugeTests MemoryTrimTests; do git mv $tp/$t.cs $tt/Platform/Hosting/; done
  for f in $(find $tt/Wire $tt/Platform -name '*.cs'); do
    ns=$(dirname "${f#tests/}"); ns=${ns//\//.}
    sed -i "s/^namespace Dispatch\.Tests\.Protocol;\$/namespace $ns;/" "$f"
  done
  mapfile -t files < <(git ls-files -co --exclude-standard -- 'src/*.cs' 'tests/*.cs' 'fuzz/*.cs' 'bench/*.cs' 'samples/*.cs')
  apply "${files[@]}"
}

case "${1:-}" in
  apply)
    shift
    if [ $# -eq 0 ]; then mapfile -t files < <(git ls-files -co --exclude-standard -- 'src/*.cs' 'tests/*.cs' 'fuzz/*.cs' 'bench/*.cs' 'samples/*.cs'); set -- "${files[@]}"; fi
    apply "$@" ;;
  move) move ;;
  *) echo "usage: $0 apply [FILE...] | move" >&2; exit 64 ;;
esac
