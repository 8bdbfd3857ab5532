import Foundation
import OverlayTestKit

/// A lab host's own mount namespace (`lab up --podman` or `--docker`), kept by a handle under its
/// state directory, in which its overlayd and its container runtime run, as on a real host. There:
/// - /sys is the host's network namespace's, with the cgroup v1 hierarchies mounted on a tmpfs
///   (this machine's crun refuses its hybrid cgroup layout; dockerd finds no devices cgroup in a
///   fresh sysfs without them);
/// - /run/netns, /var/lib/cni, /dev/shm, /run/docker (dockerd's exec root, its plugin directory
///   /run/docker/plugins among it) and /run/containerd are the host's own.
/// `ip netns exec` would make a new mount namespace for every command: dockerd restarted there
/// could not see its containers' namespaces any more (live restore).
enum LabMountNamespace {
    static func handle(_ lab: LabOptions, _ host: String) -> String { lab.stateDir(host) + "/mntns/mnt" }

    /// Whether the host has one.
    static func exists(_ lab: LabOptions, _ host: String) -> Bool { FileManager.default.fileExists(atPath: handle(lab, host)) }

    /// The argv prefix that enters the host: its mount and network namespaces.
    static func enter(_ lab: LabOptions, _ host: String) -> [String] {
        ["nsenter", "--mount=\(handle(lab, host))", "--net=/run/netns/\(lab.namespace(host))"]
    }

    /// Makes the host's mount namespace (once).
    static func make(_ lab: LabOptions, _ host: String) throws {
        guard !exists(lab, host) else { return }
        let mntns = lab.stateDir(host) + "/mntns"
        let r = try Command.run(["/bin/sh", "-ec", """
            mkdir -p \(mntns)
            mount --bind \(mntns) \(mntns)
            mount --make-private \(mntns)
            touch \(mntns)/mnt
            unshare --mount=\(mntns)/mnt --propagation slave true
            nsenter --mount=\(mntns)/mnt --net=/run/netns/\(lab.namespace(host)) /bin/sh -ec '
              umount -l /sys; mount -t sysfs sysfs /sys
              mount -t tmpfs -o mode=755 cgroup_root /sys/fs/cgroup
              for c in cpu cpuacct cpuset memory devices freezer blkio pids; do
                mkdir -p /sys/fs/cgroup/$c; mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c; done
              mkdir -p /sys/fs/cgroup/systemd; mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
              for d in /run/netns /var/lib/cni /run/docker /run/containerd; do mkdir -p $d; mount -t tmpfs -o mode=711 tmpfs $d; done
              mount -t tmpfs tmpfs /dev/shm
            '
            """], timeout: 60)
        guard r.succeeded else { throw CLIError("cannot make the mount namespace of \(host): \(r.output.suffix(500))") }
    }
}
