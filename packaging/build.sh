#!/usr/bin/env bash
# build.sh deb|rpm -- builds the Debian or RPM package of vmshift from a
# release build, into target/package/. Both packages hold the same files:
#   /usr/sbin/vmshift                          the binary
#   /usr/lib/ocf/resource.d/vmshift/server     -> /usr/sbin/vmshift (the OCF entry)
#   /usr/share/man/man8/vmshift.8.gz           generated from --help's source
#   /usr/share/doc/vmshift/{README.md,copyright}
# The .deb is built with dpkg-deb from a staged tree (dependencies from
# dpkg-shlibdeps); the .rpm with rpmbuild from the same tree.
set -euo pipefail
kind=${1:?usage: build.sh deb|rpm}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
out=target/package
stage=$out/root
rm -rf "$stage" && mkdir -p "$stage"

cargo build --release --locked
install -D -m 755 target/release/vmshift "$stage/usr/sbin/vmshift"
mkdir -p "$stage/usr/lib/ocf/resource.d/vmshift"
# Relative, so the tree is correct wherever it is unpacked (rpmbuild checks).
ln -s ../../../../sbin/vmshift "$stage/usr/lib/ocf/resource.d/vmshift/server"
mkdir -p "$stage/usr/share/man/man8"
cargo run --release --locked --quiet --example mangen | gzip -9n >"$stage/usr/share/man/man8/vmshift.8.gz"
install -D -m 644 README.md "$stage/usr/share/doc/vmshift/README.md"
install -D -m 644 COPYING "$stage/usr/share/doc/vmshift/copyright"

case "$kind" in
deb)
	arch=$(dpkg --print-architecture)
	# dpkg-shlibdeps wants a debian/control beside it; give it a scratch one.
	scratch=$(mktemp -d)
	trap 'rm -rf "$scratch"' EXIT
	mkdir -p "$scratch/debian"
	printf 'Source: vmshift\n\nPackage: vmshift\nArchitecture: any\n' >"$scratch/debian/control"
	depends=$(cd "$scratch" && dpkg-shlibdeps -O "$top/$stage/usr/sbin/vmshift" 2>/dev/null |
		sed -n 's/^shlibs:Depends=//p')
	# The binary loads libvirt.so.0 with dlopen at its first libvirt call
	# (src/libvirt/load.rs), so dpkg-shlibdeps cannot see it. 1.3.3 is what
	# libvirt0's symbols file gives for the newest function it looks up
	# (virDomainMigrateStartPostCopy).
	depends="$depends, libvirt0 (>= 1.3.3)"
	mkdir -p "$stage/DEBIAN"
	sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@DEPENDS@/$depends/" \
		-e "s/@SIZE@/$(du -sk --exclude=DEBIAN "$stage" | cut -f1)/" \
		packaging/debian/control.in >"$stage/DEBIAN/control"
	deb="$out/vmshift_${version}_${arch}.deb"
	dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
	rm -rf "$stage/DEBIAN"
	echo "$deb"
	;;
rpm)
	rpmtop=$(mktemp -d)
	trap 'rm -rf "$rpmtop"' EXIT
	rpmbuild -bb --quiet \
		--define "_topdir $rpmtop" \
		--define "_rpmdir $top/$out" \
		--define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
		--define "vmshift_version $version" \
		--define "vmshift_stage $top/$stage" \
		--define "__os_install_post %{nil}" \
		--define "_build_id_links none" \
		packaging/rpm/vmshift.spec
	ls "$out"/vmshift-"$version"-*.rpm
	;;
*)
	echo "usage: build.sh deb|rpm" >&2
	exit 2
	;;
esac
