#!/usr/bin/env bash
# tests/docker/base-images.sh [CACHE_DIR] - make the base images docker/Dockerfile's FROM lines name,
# debian:bookworm and debian:bookworm-slim, in podman's local storage, without an image registry:
# `debootstrap --variant=minbase bookworm` from the Debian mirror apt already uses, then the
# official images' finishing touches (deb822 sources with -updates and -security, apt's
# docker-clean settings; for -slim, dpkg path excludes for docs, man pages and locales), then
# `podman import` under the exact names docker.io/library/debian:bookworm[-slim].
#
# The root file system tarballs are cached in CACHE_DIR (default build/docker, gitignored): a rerun
# only imports (seconds); a machine that already has both images does nothing. Run as root.
set -euo pipefail
cache=${1:-build/docker}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
full=docker.io/library/debian:bookworm
slim=docker.io/library/debian:bookworm-slim

if podman image exists "$full" && podman image exists "$slim"; then
    echo "base-images: $full and $slim present"; exit 0
fi

# The mirror apt uses on this machine (deb822 URIs: or one-line deb entries), else deb.debian.org.
apt_uri() { # regex the URI must match
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
        sed -n -e 's/^URIs:[[:space:]]*//p' -e 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p' |
        tr ' ' '\n' | grep -E "$1" | head -1 || true
}
mirror=${DEBIAN_MIRROR:-$(apt_uri '/debian/?$')}; mirror=${mirror:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-$(apt_uri '/debian-security/?$')}
security=${security:-http://deb.debian.org/debian-security}

make_tarballs() {
    local root=$cache/rootfs.tmp
    rm -rf "$root"
    echo "base-images: debootstrap --variant=minbase bookworm from $mirror"
    debootstrap --variant=minbase bookworm "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
        { tail -20 "$cache/debootstrap.log" >&2; echo "base-images: debootstrap failed (log: $cache/debootstrap.log)" >&2; exit 1; }
    # As the official images: deb822 sources, no package caches, no translations, apt cleans up.
    rm -f "$root/etc/apt/sources.list"
    cat >"$root/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'CLEAN'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CLEAN
    echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
    echo 'APT::AutoRemove::SuggestsImportant "false";' >"$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
           "$root"/var/log/* "$root"/tmp/* "$root"/dev/* "$root"/proc/* "$root"/sys/*
    echo bookworm-lsq >"$root/etc/hostname"
    : >"$root/etc/resolv.conf"
    tar --numeric-owner --xattrs -C "$root" -cf "$cache/debian-bookworm.tar.tmp" .
    # -slim: what the official slim variant leaves out, and keeps out of later installs.
    cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'SLIM'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
SLIM
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$root"/usr/share/man/* "$root"/usr/share/groff/* "$root"/usr/share/info/* \
           "$root"/usr/share/lintian/* "$root"/usr/share/linda/*
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    tar --numeric-owner --xattrs -C "$root" -cf "$cache/debian-bookworm-slim.tar.tmp" .
    mv "$cache/debian-bookworm.tar.tmp" "$cache/debian-bookworm.tar"
    mv "$cache/debian-bookworm-slim.tar.tmp" "$cache/debian-bookworm-slim.tar"
    rm -rf "$root"
}

[ -f "$cache/debian-bookworm.tar" ] && [ -f "$cache/debian-bookworm-slim.tar" ] || make_tarballs
for pair in "$full debian-bookworm.tar" "$slim debian-bookworm-slim.tar"; do
    set -- $pair
    podman image exists "$1" && continue
    echo "base-images: podman import $cache/$2 $1"
    podman import --quiet --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        "$cache/$2" "$1" >/dev/null
done
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^docker.io/library/debian:bookworm' | sed 's/^/base-images: /'
