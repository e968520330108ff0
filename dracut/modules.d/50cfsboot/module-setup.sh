#!/bin/bash
# dracut module "cfsboot": the initramfs agent that mounts the composefs
# deployment named on the kernel command line as the root (`cfsboot
# setup-root`, run by cfsboot-setup-root.service after sysroot.mount).
#
# Opt-in, like bootc's module: never included automatically (check returns
# 255). An image opts in with a dracut.conf.d snippet, e.g. the one shipped
# as dracut/dracut.conf.d/50-cfsboot.conf:
#     add_dracutmodules+=" cfsboot "
# or per build with `dracut --add cfsboot`.
#
# Install: copy this directory to /usr/lib/dracut/modules.d/50cfsboot and the
# executable to /usr/bin/cfsboot (override with CFSBOOT_EXE=/path when
# running dracut). Works with dracut 059 (Debian 12) and 106 (Debian 13).

cfsboot_exe() {
    echo "${CFSBOOT_EXE:-/usr/bin/cfsboot}"
}

check() {
    # Never by default; without the executable the module cannot work.
    require_binaries "$(cfsboot_exe)" || return 1
    return 255
}

depends() {
    # The agent is a systemd unit ordered in the initrd transaction
    # (sysroot.mount, initrd-root-fs.target): no systemd, no agent.
    echo systemd-initrd
    return 0
}

installkernel() {
    # EROFS for the image, overlayfs for the composefs root and /etc, /var;
    # hostonly='' so that an image built in a container (where nothing is
    # loaded) still gets them. Missing erofs or overlay is fatal (-c); loop
    # is only needed by kernels without file-backed EROFS (< 6.12) and may be
    # built in or absent.
    hostonly='' instmods -c erofs overlay
    hostonly='' instmods loop
    # The repository's fs-verity hash (SHA-512): where the kernel has it as
    # a module (Debian 12: CONFIG_CRYPTO_SHA512=m), opening any verity file
    # in the initramfs fails with ENOPKG unless the module is here. Built in
    # on Debian 13, so these may be absent.
    hostonly='' instmods sha512_generic sha512_ssse3
}

install() {
    local exe service=cfsboot-setup-root.service
    exe=$(cfsboot_exe)

    # The executable, with the C libraries it links (inst_binary follows ldd).
    inst_binary "$exe" /usr/bin/cfsboot || return 1

    inst_simple "$moddir/$service" "$systemdsystemunitdir/$service"
    mkdir -p "$initdir$systemdsystemunitdir/initrd-root-fs.target.wants"
    ln_r "$systemdsystemunitdir/$service" "$systemdsystemunitdir/initrd-root-fs.target.wants/$service"

    # The image's mount configuration, if it has one (bootc's file and schema).
    if [[ -e "$dracutsysrootdir/usr/lib/composefs/setup-root-conf.toml" ]]; then
        inst_simple /usr/lib/composefs/setup-root-conf.toml
    fi

    # Never strip this initramfs. dracut's strip pass runs `strip -g -p` on
    # every executable once all modules are installed whenever strip or
    # eu-strip is present (binutils is a Recommends of dracut-core), and
    # stripping a Bun single-file executable removes the embedded program:
    # what is left is the plain bun runtime. dracut offers no per-file
    # exclusion (the pass only skips kernel modules), so this module turns the
    # pass off for the whole image. install() runs in dracut's own shell
    # (module_install sources this file), after the command line and the
    # configuration have set do_strip, and before the strip pass reads it, in
    # dracut 059 and 106 alike; that beats `--strip` on the command line too.
    # (Distribution binaries are stripped at package build time, so the pass
    # gains nothing on Debian or Fedora.)
    if [[ $do_strip == yes ]]; then
        dinfo "cfsboot: not stripping the initramfs (strip would remove the program embedded in $exe)"
    fi
    do_strip=no
    return 0
}
