#define _GNU_SOURCE
#include "COverlayShims.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>
#include <linux/neighbour.h>
#include <linux/nsfs.h>
#include <linux/rtnetlink.h>
#include <netlink/netlink.h>
#include <netlink/msg.h>
#include <netlink/route/route.h>

// The kernel's struct ifreq layout that TUNSETIFF reads: name then a union (flags at offset 16).
_Static_assert(sizeof(((struct ifreq *)0)->ifr_name) == IFNAMSIZ, "ifr_name is IFNAMSIZ bytes");
_Static_assert(offsetof(struct ifreq, ifr_flags) == IFNAMSIZ, "ifr_flags follows the name");
_Static_assert(sizeof(struct ifreq) == 40, "struct ifreq is 40 bytes on Linux");
_Static_assert(IFNAMSIZ == 16, "IFNAMSIZ is 16 on Linux");

int ovl_unshare_net(void) { return unshare(CLONE_NEWNET) == 0 ? 0 : -errno; }

int ovl_setns_net(int fd) { return setns(fd, CLONE_NEWNET) == 0 ? 0 : -errno; }

int ovl_set_thread_name(const char *name) {
    char truncated[16];
    strncpy(truncated, name, sizeof truncated - 1);
    truncated[sizeof truncated - 1] = 0;
    int rc = pthread_setname_np(pthread_self(), truncated);
    return rc == 0 ? 0 : -rc;
}

int ovl_is_net_namespace(int fd) {
    int type = ioctl(fd, NS_GET_NSTYPE);
    if (type < 0) return errno == ENOTTY || errno == EINVAL ? 0 : -errno;
    return type == CLONE_NEWNET ? 1 : 0;
}

int ovl_bind_mount(const char *source, const char *target, int recursive) {
    unsigned long flags = MS_BIND | (recursive ? MS_REC : 0);
    return mount(source, target, "none", flags, NULL) == 0 ? 0 : -errno;
}

int ovl_make_shared(const char *path) {
    return mount("", path, "none", MS_SHARED | MS_REC, NULL) == 0 ? 0 : -errno;
}

int ovl_umount_detach(const char *path) { return umount2(path, MNT_DETACH) == 0 ? 0 : -errno; }

int32_t ovl_gettid(void) { return (int32_t)syscall(SYS_gettid); }

int ovl_tap_create(const char *name, int persistent, char *out_name, size_t out_len) {
    return ovl_tap_create_vnet(name, persistent, 0, out_name, out_len);
}

int ovl_tap_create_vnet(const char *name, int persistent, int vnet_hdr, char *out_name, size_t out_len) {
    if (name == NULL || strlen(name) >= IFNAMSIZ) return -EINVAL;
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0) return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (vnet_hdr ? IFF_VNET_HDR : 0);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, (void *)&ifr) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    if (vnet_hdr) {
        int size = (int)sizeof(struct virtio_net_hdr);
        if (ioctl(fd, TUNSETVNETHDRSZ, &size) < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
    }
    if (out_name != NULL && out_len > 0) {
        strncpy(out_name, ifr.ifr_name, out_len - 1);
        out_name[out_len - 1] = 0;
    }
    if (persistent) {
        if (ioctl(fd, TUNSETPERSIST, 1) < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
        close(fd);
        return 0;
    }
    return fd;
}

_Static_assert(sizeof(struct virtio_net_hdr) == 10, "struct virtio_net_hdr is 10 bytes");

int ovl_tap_set_offload(int fd, unsigned int flags) {
    return ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags) == 0 ? 0 : -errno;
}

const unsigned int ovl_tun_f_csum = TUN_F_CSUM;
const unsigned int ovl_tun_f_tso4 = TUN_F_TSO4;
const unsigned int ovl_tun_f_tso6 = TUN_F_TSO6;
const unsigned int ovl_tun_f_tso_ecn = TUN_F_TSO_ECN;

int ovl_rtnl_route_delete(struct nl_sock *sock, struct rtnl_route *route) {
    struct nl_msg *msg = NULL;
    int err = rtnl_route_build_del_request(route, 0, &msg);
    if (err < 0) return err;
    struct rtmsg *rtm = nlmsg_data(nlmsg_hdr(msg));
    rtm->rtm_scope = RT_SCOPE_NOWHERE;
    rtm->rtm_protocol = RTPROT_UNSPEC;
    // nl_send_sync sends, waits for the kernel's ACK or error, and frees the message.
    return nl_send_sync(sock, msg);
}

const unsigned int ovl_iff_up = IFF_UP;
const int ovl_nud_permanent = NUD_PERMANENT;
const int ovl_nud_noarp = NUD_NOARP;
const int ovl_nud_reachable = NUD_REACHABLE;
const unsigned int ovl_ntf_self = NTF_SELF;
const unsigned int ovl_ntf_master = NTF_MASTER;
const unsigned int ovl_rtnh_f_onlink = RTNH_F_ONLINK;
const uint32_t ovl_rt_table_main = RT_TABLE_MAIN;
const uint8_t ovl_rtn_unicast = RTN_UNICAST;
const int ovl_af_bridge = AF_BRIDGE;
const int ovl_af_llc = AF_LLC;
const int ovl_ifnamsiz = IFNAMSIZ;

// ---- Packet capture ----
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <unistd.h>
#include <errno.h>
#include <string.h>

int ovl_packet_socket(const char *ifname) {
    unsigned int index = if_nametoindex(ifname);
    if (index == 0) return -errno;
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL));
    if (fd < 0) return -errno;
    struct sockaddr_ll sll;
    memset(&sll, 0, sizeof sll);
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = (int)index;
    if (bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

#include <spawn.h>

int ovl_spawn_clean(pid_t *pid, const char *path, int search, char *const argv[], char *const envp[],
                    const char *log, int output_fd, int new_session) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    int rc = posix_spawn_file_actions_init(&actions);
    if (rc != 0) return rc;
    rc = posix_spawnattr_init(&attributes);
    if (rc != 0) {
        posix_spawn_file_actions_destroy(&actions);
        return rc;
    }
    if (rc == 0) rc = posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    if (log != NULL) {
        if (rc == 0) rc = posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, 1, 2);
    } else {
        if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, output_fd, 1);
        if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, output_fd, 2);
    }
    if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(&actions, 3);
    sigset_t empty, all;
    sigemptyset(&empty);
    sigfillset(&all);  // SIGKILL and SIGSTOP cannot be set and are skipped
    if (rc == 0) rc = posix_spawnattr_setsigmask(&attributes, &empty);
    if (rc == 0) rc = posix_spawnattr_setsigdefault(&attributes, &all);
    short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | (new_session ? POSIX_SPAWN_SETSID : 0);
    if (rc == 0) rc = posix_spawnattr_setflags(&attributes, flags);
    if (rc == 0) {
        rc = search ? posix_spawnp(pid, path, &actions, &attributes, argv, envp)
                    : posix_spawn(pid, path, &actions, &attributes, argv, envp);
    }
    posix_spawnattr_destroy(&attributes);
    posix_spawn_file_actions_destroy(&actions);
    return rc;
}

// ---- Kernel IPsec probe ----

#include <linux/xfrm.h>
#include <linux/netlink.h>

#define OVL_PROBE_SPI 0x0ff1ce01u

/// Sends one xfrm request and reads its acknowledgement: 0, or -errno with the kernel's extended
/// ack text (if any) in `message`.
static int ovl_xfrm_request(int fd, struct nlmsghdr *request, char *message, size_t message_len) {
    if (send(fd, request, request->nlmsg_len, 0) < 0) return -errno;
    char reply[4096];
    for (;;) {
        ssize_t n = recv(fd, reply, sizeof reply, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        for (struct nlmsghdr *h = (struct nlmsghdr *)reply; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_seq != request->nlmsg_seq || h->nlmsg_type != NLMSG_ERROR) continue;
            if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr))) return -EPROTO;
            struct nlmsgerr *e = NLMSG_DATA(h);
            if (e->error != 0 && message_len > 0 && (h->nlmsg_flags & NLM_F_ACK_TLVS)) {
                // With NETLINK_CAP_ACK the request is not echoed: the TLVs follow the header.
                size_t off = NLMSG_LENGTH(sizeof(struct nlmsgerr));
                while (off + sizeof(struct nlattr) <= h->nlmsg_len) {
                    struct nlattr *a = (struct nlattr *)((char *)h + off);
                    if (a->nla_len < sizeof(struct nlattr) || off + a->nla_len > h->nlmsg_len) break;
                    if ((a->nla_type & NLA_TYPE_MASK) == NLMSGERR_ATTR_MSG) {
                        size_t len = a->nla_len - sizeof(struct nlattr);
                        if (len >= message_len) len = message_len - 1;
                        memcpy(message, (char *)a + sizeof(struct nlattr), len);
                        message[len] = 0;
                        message[strnlen(message, len)] = 0;
                        break;
                    }
                    off += NLA_ALIGN(a->nla_len);
                }
            }
            return e->error;
        }
    }
}

int ovl_xfrm_probe_esp_gcm(char *message, size_t message_len) {
    if (message_len > 0) message[0] = 0;
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_XFRM);
    if (fd < 0) return -errno;
    int one = 1;
    setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
    setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
    struct timeval tv = { .tv_sec = 2, .tv_usec = 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_nl local = { .nl_family = AF_NETLINK };
    if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }

    struct {
        struct nlmsghdr n;
        struct xfrm_usersa_info info;
        char attrs[128];
    } add;
    memset(&add, 0, sizeof add);
    add.n.nlmsg_type = XFRM_MSG_NEWSA;
    add.n.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    add.n.nlmsg_seq = 1;
    add.info.family = AF_INET;
    add.info.saddr.a4 = htonl(0xC0000201);          // 192.0.2.1 (TEST-NET-1)
    add.info.id.daddr.a4 = htonl(0xC0000202);       // 192.0.2.2
    add.info.id.spi = htonl(OVL_PROBE_SPI);
    add.info.id.proto = IPPROTO_ESP;
    add.info.mode = XFRM_MODE_TRANSPORT;
    add.info.reqid = 1;
    add.info.replay_window = 32;
    add.info.sel.family = AF_INET;
    add.info.lft.soft_byte_limit = XFRM_INF;
    add.info.lft.hard_byte_limit = XFRM_INF;
    add.info.lft.soft_packet_limit = XFRM_INF;
    add.info.lft.hard_packet_limit = XFRM_INF;
    size_t base = NLMSG_ALIGN(NLMSG_LENGTH(sizeof add.info));
    struct nlattr *a = (struct nlattr *)((char *)&add + base);
    size_t aead_len = sizeof(struct xfrm_algo_aead) + 20;   // AES-128 key + 4-byte salt
    a->nla_type = XFRMA_ALG_AEAD;
    a->nla_len = NLA_HDRLEN + aead_len;
    struct xfrm_algo_aead *aead = (struct xfrm_algo_aead *)((char *)a + NLA_HDRLEN);
    strcpy(aead->alg_name, "rfc4106(gcm(aes))");
    aead->alg_key_len = 160;
    aead->alg_icv_len = 64;                           // Docker's 8-byte ICV
    memset(aead->alg_key, 0x5a, 20);
    add.n.nlmsg_len = base + NLA_ALIGN(a->nla_len);
    int rc = ovl_xfrm_request(fd, &add.n, message, message_len);
    if (rc == 0) {
        struct {
            struct nlmsghdr n;
            struct xfrm_usersa_id id;
        } del;
        memset(&del, 0, sizeof del);
        del.n.nlmsg_type = XFRM_MSG_DELSA;
        del.n.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
        del.n.nlmsg_seq = 2;
        del.n.nlmsg_len = NLMSG_LENGTH(sizeof del.id);
        del.id.daddr.a4 = htonl(0xC0000202);
        del.id.spi = htonl(OVL_PROBE_SPI);
        del.id.family = AF_INET;
        del.id.proto = IPPROTO_ESP;
        (void)ovl_xfrm_request(fd, &del.n, NULL, 0);
    }
    close(fd);
    return rc;
}

void ovl_heap_usage(uint64_t *in_use, uint64_t *held_free) {
    struct mallinfo2 m = mallinfo2();
    *in_use = (uint64_t)m.uordblks + (uint64_t)m.hblkhd;
    *held_free = (uint64_t)m.fordblks;
}

int ovl_heap_trim(void) { return malloc_trim(0); }

int ovl_heap_limit_arenas(int arenas) { return mallopt(M_ARENA_MAX, arenas); }
