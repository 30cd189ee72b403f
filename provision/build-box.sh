#!/bin/sh
# Build the lab's Vagrant box from Debian packages, one phase per call so that
# lab/box.py can time and report each phase:
#
#   build-box.sh debootstrap   minimal Debian rootfs with the lab's packages
#   build-box.sh configure     user, SSH key, sshd, networkd, guest agent, console
#   build-box.sh image         ext4 image of the rootfs -> qcow2
#   build-box.sh package       box dir (metadata.json, box.img, kernel, initrd) -> .box tar
#
# Inputs come from the environment (lab/box.py sets them; they are part of the
# box's cache key together with this file's content):
#   BOX_RELEASE   Debian release (bookworm, bullseye, trixie)
#   BOX_MIRROR    Debian archive URL, read from the host's apt sources by lab/box.py
#   BOX_PACKAGES  comma-separated packages for debootstrap --include
#   BOX_PUBKEY    path of the per-lab SSH public key to authorise
#   BOX_USER      login user in the guest (NOPASSWD sudo)
#   BOX_WORKDIR   scratch dir (rootfs, images); BOX_OUT the .box file to write
#   BOX_DISK_GB   virtual disk size
#   BOX_HASH      the cache key, recorded inside the box
# Every phase starts from a clean state for its own outputs: rerunning is safe.
set -eu

phase=${1:?usage: build-box.sh debootstrap|configure|image|package}
: "${BOX_RELEASE:?}" "${BOX_WORKDIR:?}"
rootfs="$BOX_WORKDIR/rootfs"
boxdir="$BOX_WORKDIR/box"

umount_rootfs() {
    # debootstrap mounts proc/sys in the target; a failed run may leave them.
    for m in proc sys dev/pts dev; do
        if mountpoint -q "$rootfs/$m" 2>/dev/null; then umount -l "$rootfs/$m" || true; fi
    done
}

case "$phase" in
debootstrap)
    : "${BOX_MIRROR:?}" "${BOX_PACKAGES:?}"
    umount_rootfs
    rm -rf "$rootfs"
    mkdir -p "$rootfs"
    trap umount_rootfs EXIT
    debootstrap --variant=minbase --components=main \
        --include="$BOX_PACKAGES" "$BOX_RELEASE" "$rootfs" "$BOX_MIRROR"
    ;;

configure)
    : "${BOX_PUBKEY:?}" "${BOX_USER:?}" "${BOX_HASH:?}"
    [ -x "$rootfs/usr/sbin/sshd" ] || { echo "no rootfs at $rootfs: run the debootstrap phase first" >&2; exit 1; }
    umount_rootfs
    in_root() { chroot "$rootfs" "$@"; }

    echo nomad-lab > "$rootfs/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tnomad-lab\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$rootfs/etc/hosts"
    printf '/dev/vda\t/\text4\terrors=remount-ro\t0\t1\n' > "$rootfs/etc/fstab"
    # Each VM gets its own machine-id at first boot.
    : > "$rootfs/etc/machine-id"
    rm -f "$rootfs/var/lib/dbus/machine-id"

    # Login user: key only, passwordless sudo (the lab runs everything as root via sudo).
    if ! in_root id -u "$BOX_USER" >/dev/null 2>&1; then
        in_root useradd --create-home --shell /bin/bash --groups sudo "$BOX_USER"
    fi
    in_root passwd --lock "$BOX_USER" >/dev/null
    printf '%s ALL=(ALL) NOPASSWD: ALL\n' "$BOX_USER" > "$rootfs/etc/sudoers.d/lab"
    chmod 0440 "$rootfs/etc/sudoers.d/lab"
    home="$rootfs/home/$BOX_USER"
    install -d -m 0700 "$home/.ssh"
    install -m 0600 "$BOX_PUBKEY" "$home/.ssh/authorized_keys"
    in_root chown -R "$BOX_USER:$BOX_USER" "/home/$BOX_USER/.ssh"

    # sshd: keys only; no DNS lookups (the guest has no resolver, restrict=on).
    cat > "$rootfs/etc/ssh/sshd_config.d/lab.conf" <<'EOF'
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UseDNS no
GSSAPIAuthentication no
EOF

    # QEMU user-mode networking hands out an address by DHCP on the virtio NIC. Every veth is
    # Type=ether too: without Kind=!veth networkd takes over the host side of each CNI bridge
    # veth 1-2 s after CNI attached it and detaches it from the bridge (group networking dead).
    cat > "$rootfs/etc/systemd/network/80-lab-dhcp.network" <<'EOF'
[Match]
Type=ether
Kind=!veth

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF
    # Don't hold boot waiting for "online": SSH only needs the NIC configured.
    systemctl --root="$rootfs" enable systemd-networkd.service ssh.service serial-getty@ttyS0.service >/dev/null
    systemctl --root="$rootfs" disable systemd-networkd-wait-online.service >/dev/null 2>&1 || true
    systemctl --root="$rootfs" mask apt-daily.timer apt-daily-upgrade.timer >/dev/null 2>&1 || true

    # Persistent journal: diagnostics survive a guest reboot; capped so the disk stays small.
    mkdir -p "$rootfs/var/log/journal" "$rootfs/etc/systemd/journald.conf.d"
    printf '[Journal]\nStorage=persistent\nSystemMaxUse=200M\n' > "$rootfs/etc/systemd/journald.conf.d/lab.conf"

    # sch_netem (tc netem faults) ships in linux-image but is not autoloaded.
    echo sch_netem > "$rootfs/etc/modules-load.d/lab-netem.conf"

    # Record what this box is, for humans inside the guest.
    printf '{"box_hash": "%s", "release": "%s"}\n' "$BOX_HASH" "$BOX_RELEASE" > "$rootfs/etc/nomad-lab-box.json"

    # Drop kernel modules for hardware a QEMU guest never has (~half of /usr/lib/modules):
    # a smaller box adds and uploads faster. The initrd keeps its own copies.
    for kdir in "$rootfs"/usr/lib/modules/*/kernel; do
        rm -rf "$kdir/drivers/gpu" "$kdir/drivers/media" "$kdir/drivers/net/wireless" \
            "$kdir/drivers/net/ethernet" "$kdir/drivers/infiniband" "$kdir/drivers/staging" \
            "$kdir/drivers/bluetooth" "$kdir/drivers/isdn" "$kdir/sound" \
            "$kdir/net/bluetooth" "$kdir/net/wireless" "$kdir/net/mac80211"
        in_root depmod -a "$(basename "$(dirname "$kdir")")"
    done

    in_root apt-get clean
    rm -rf "$rootfs/var/lib/apt/lists/"* "$rootfs/var/cache/apt/"*.bin "$rootfs/tmp/"* \
        "$rootfs/usr/share/doc/"* "$rootfs/usr/share/man/"* "$rootfs/var/log/"*.log
    ;;

image)
    : "${BOX_DISK_GB:?}"
    [ -d "$rootfs/etc" ] || { echo "no rootfs at $rootfs: run the earlier phases first" >&2; exit 1; }
    umount_rootfs
    rm -f "$BOX_WORKDIR/root.raw" "$BOX_WORKDIR/box.img"
    truncate -s "${BOX_DISK_GB}G" "$BOX_WORKDIR/root.raw"
    mkfs.ext4 -q -F -L nomad-lab-root -d "$rootfs" "$BOX_WORKDIR/root.raw"
    qemu-img convert -f raw -O qcow2 "$BOX_WORKDIR/root.raw" "$BOX_WORKDIR/box.img"
    rm -f "$BOX_WORKDIR/root.raw"
    qemu-img info "$BOX_WORKDIR/box.img" | sed -n 's/^disk size: /qcow2 size on disk: /p'
    ;;

package)
    : "${BOX_OUT:?}" "${BOX_DISK_GB:?}" "${BOX_HASH:?}"
    [ -f "$BOX_WORKDIR/box.img" ] || { echo "no $BOX_WORKDIR/box.img: run the image phase first" >&2; exit 1; }
    kernel=$(ls "$rootfs"/boot/vmlinuz-* | sort -V | tail -n 1)
    initrd=$(ls "$rootfs"/boot/initrd.img-* | sort -V | tail -n 1)
    rm -rf "$boxdir"
    mkdir -p "$boxdir"
    mv "$BOX_WORKDIR/box.img" "$boxdir/box.img"
    cp "$kernel" "$boxdir/vmlinuz"
    cp "$initrd" "$boxdir/initrd.img"
    printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %s}\n' "$BOX_DISK_GB" > "$boxdir/metadata.json"
    printf '{"box_hash": "%s", "release": "%s", "kernel": "%s"}\n' \
        "$BOX_HASH" "$BOX_RELEASE" "$(basename "$kernel" | sed 's/^vmlinuz-//')" > "$boxdir/lab-box.json"
    # The box carries its own kernel: boot it directly from the box's directory.
    cat > "$boxdir/Vagrantfile" <<'EOF'
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.kernel = File.join(__dir__, "vmlinuz")
    libvirt.initrd = File.join(__dir__, "initrd.img")
  end
end
EOF
    rm -f "$BOX_OUT"
    tar -cf "$BOX_OUT" -C "$boxdir" metadata.json lab-box.json Vagrantfile vmlinuz initrd.img box.img
    ;;

*)
    echo "unknown phase '$phase': use debootstrap, configure, image or package" >&2
    exit 2
    ;;
esac
