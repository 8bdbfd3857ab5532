#define _GNU_SOURCE
#include "COverlayShims.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
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

int ovl_spawn_close_from(posix_spawn_file_actions_t *actions, int lowest) {
    return posix_spawn_file_actions_addclosefrom_np(actions, lowest);
}
