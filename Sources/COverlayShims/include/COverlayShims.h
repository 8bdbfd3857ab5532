#ifndef COVERLAYSHIMS_H
#define COVERLAYSHIMS_H
// C shims for what Swift cannot import directly (macros, unions, variadics). Every name here is
// prefixed `ovl_`. Mirrored structs carry _Static_asserts in the .c file.
//
// Conventions: functions that wrap a system call return >= 0 on success and -errno on failure,
// so the Swift side turns every failure into an error in one place without reading errno later.
#include <stdint.h>
#include <stddef.h>
#include <spawn.h>

// ---- Namespaces (sched.h / sys/mount.h need _GNU_SOURCE or are macros) ----

/// Puts the calling thread into a new, empty network namespace (unshare(CLONE_NEWNET)).
int ovl_unshare_net(void);
/// Moves the calling thread into the network namespace behind `fd` (setns(fd, CLONE_NEWNET)).
int ovl_setns_net(int fd);
/// Whether `fd` is a network namespace handle (an nsfs file whose NS_GET_NSTYPE is CLONE_NEWNET):
/// 1 yes, 0 no, -errno when it cannot be asked.
int ovl_is_net_namespace(int fd);
/// Bind-mounts `source` onto `target` (mount(source, target, "none", MS_BIND, NULL)).
int ovl_bind_mount(const char *source, const char *target, int recursive);
/// Marks the mount at `path` shared, recursively (mount("", path, "none", MS_SHARED|MS_REC)).
int ovl_make_shared(const char *path);
/// Lazily unmounts `path` (umount2(path, MNT_DETACH)).
int ovl_umount_detach(const char *path);
/// The kernel thread ID of the calling thread.
int32_t ovl_gettid(void);
/// Names the calling thread (pthread_setname_np, a GNU extension): the kernel keeps the first 15
/// bytes. 0 or -errno.
int ovl_set_thread_name(const char *name);

// ---- TUN/TAP (TUNSETIFF takes a union-bearing struct ifreq) ----

/// Creates (or attaches to) TAP device `name` in the calling thread's network namespace with
/// IFF_TAP|IFF_NO_PI. Writes the kernel's name into `out_name` (at least 16 bytes). When
/// `persistent` is non-zero the device is made persistent (TUNSETPERSIST) and the fd is closed:
/// returns 0. Otherwise returns the fd owning the device (closing it deletes the device).
/// Returns -errno on failure.
int ovl_tap_create(const char *name, int persistent, char *out_name, size_t out_len);
/// Like ovl_tap_create; with `vnet_hdr` non-zero the device also gets IFF_VNET_HDR and a header
/// size of 10 (TUNSETVNETHDRSZ): every read and write then starts with a struct virtio_net_hdr
/// (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset; native byte order).
int ovl_tap_create_vnet(const char *name, int persistent, int vnet_hdr, char *out_name, size_t out_len);
/// TUNSETOFFLOAD on a TAP descriptor opened with IFF_VNET_HDR: `flags` is a mask of the
/// ovl_tun_f_* constants (what the reader can take: partial checksums, TSO super-frames).
/// Returns 0 or -errno (EINVAL when the kernel lacks one of the flags).
int ovl_tap_set_offload(int fd, unsigned int flags);
/// TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN from <linux/if_tun.h>.
extern const unsigned int ovl_tun_f_csum;
extern const unsigned int ovl_tun_f_tso4;
extern const unsigned int ovl_tun_f_tso6;
extern const unsigned int ovl_tun_f_tso_ecn;

// ---- Packet capture (sockaddr_ll lives in <linux/if_packet.h>, which Glibc's module lacks) ----

/// Opens a non-blocking AF_PACKET/SOCK_RAW socket for every protocol (ETH_P_ALL), bound to
/// interface `ifname` of the calling thread's network namespace. Returns the fd or -errno.
int ovl_packet_socket(const char *ifname);

// ---- libnl gaps ----

struct nl_sock;
struct rtnl_route;

/// Deletes the route described by `route` the way `ip route del` does: libnl always guesses a
/// scope (link scope when no gateway is given) and sends protocol "static", and the kernel then only
/// deletes a route with that scope and protocol. This sends RT_SCOPE_NOWHERE and protocol 0
/// ("any") instead. Returns 0 or a negative libnl error code.
int ovl_rtnl_route_delete(struct nl_sock *sock, struct rtnl_route *route);

// ---- Constants that arrive as macros or enums Swift does not see everywhere ----

/// IFF_UP from <net/if.h>.
extern const unsigned int ovl_iff_up;
/// NUD_PERMANENT from <linux/neighbour.h>.
extern const int ovl_nud_permanent;
/// NUD_REACHABLE from <linux/neighbour.h>.
extern const int ovl_nud_reachable;
/// NUD_NOARP from <linux/neighbour.h>.
extern const int ovl_nud_noarp;
/// NTF_SELF from <linux/neighbour.h>.
extern const unsigned int ovl_ntf_self;
/// NTF_MASTER from <linux/neighbour.h>.
extern const unsigned int ovl_ntf_master;
/// RTNH_F_ONLINK from <linux/rtnetlink.h>.
extern const unsigned int ovl_rtnh_f_onlink;
/// RT_TABLE_MAIN from <linux/rtnetlink.h>.
extern const uint32_t ovl_rt_table_main;
/// RTN_UNICAST from <linux/rtnetlink.h>.
extern const uint8_t ovl_rtn_unicast;
/// AF_BRIDGE / PF_BRIDGE.
extern const int ovl_af_bridge;
/// AF_LLC (libnl's family for link-layer addresses).
extern const int ovl_af_llc;
/// IFNAMSIZ (16, including the terminating zero).
extern const int ovl_ifnamsiz;

// ---- Spawning ----

/// Starts a child with a clean slate, the one way every spawn of the project goes (the daemon's
/// containers, the test kit's commands and daemons): standard input from /dev/null; standard
/// output and error appended to `log` (created 0600) or, when `log` is NULL, both onto `output_fd`;
/// every other descriptor closed; no signal blocked and every signal at its default (a Swift
/// parent blocks the signals swift-service-lifecycle or the test runner handle, and ignores
/// SIGPIPE: a child inheriting that never sees a SIGTERM or its own children's exit); in a
/// session of its own when `new_session` (a signal to the parent's process group does not reach
/// it). `path` is searched on PATH when `search`. Returns 0 with the PID in `pid`, or an errno.
int ovl_spawn_clean(pid_t *pid, const char *path, int search, char *const argv[], char *const envp[],
                    const char *log, int output_fd, int new_session);

// ---- Kernel IPsec ----

/// Asks the kernel, in the calling thread's network namespace, to add a transport-mode ESP SA
/// with rfc4106(gcm(aes)) (AES-128, 8-byte ICV: Docker's), then deletes it. 0 when the kernel
/// took it; otherwise -errno, with the kernel's extended-ack text (if any) in `message`. Run it in
/// a throwaway namespace: the SA (192.0.2.1 -> 192.0.2.2, SPI 0x0ff1ce01) exists for a moment.
int ovl_xfrm_probe_esp_gcm(char *message, size_t message_len);

// ---- The C heap (glibc malloc) ----

/// What glibc's allocator holds, over all its arenas (mallinfo2): `in_use`, the bytes of live
/// allocations (mmapped ones included); `held_free`, the free bytes inside its arenas (freed
/// chunks and each arena's top), whose whole pages a trim gives back to the kernel.
void ovl_heap_usage(uint64_t *in_use, uint64_t *held_free);

/// Gives the free pages inside every arena back to the kernel (malloc_trim(0)). 1 when some
/// memory was released, 0 when none could be.
int ovl_heap_trim(void);

/// Lets the allocator make at most `arenas` arenas (mallopt M_ARENA_MAX). 1 when taken.
int ovl_heap_limit_arenas(int arenas);

#endif
