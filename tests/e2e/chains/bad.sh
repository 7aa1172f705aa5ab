# Hostile and broken inputs for the end-to-end tests (sourced by
# tests/e2e/bad_inputs.sh and nbd_bad_inputs.sh; not a test itself).
#
# Broken images are made from good qemu-img images by editing COPIES (dd
# conv=notrunc). Each case is "name|image|file the error must name|ERE
# (case-insensitive) for the problem", the image relative to $W.

le64()
{
	od -An -t u8 -j "$2" -N 8 "$1" | tr -d ' '
}

# poke32 FILE OFF VALUE: writes a little-endian u32 in place.
poke32()
{
	local v=$3
	printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $((v & 255)) $((v >> 8 & 255)) \
		$((v >> 16 & 255)) $((v >> 24 & 255)))" |
		dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

# desc_edit FILE SED-SCRIPT: rewrites the descriptor embedded in a KDMV file.
desc_edit()
{
	local f=$1 off size
	off=$(($(le64 "$f" 28) * 512))
	size=$(($(le64 "$f" 36) * 512))
	dd if="$f" bs=512 skip=$((off / 512)) count=$((size / 512)) status=none |
		tr -d '\0' | sed -e "$2" >"$VD_TMP/desc"
	[ "$(stat -c %s "$VD_TMP/desc")" -le "$size" ] || vd_die "descriptor too big"
	{
		cat "$VD_TMP/desc"
		head -c $((size - $(stat -c %s "$VD_TMP/desc"))) /dev/zero
	} | dd of="$f" bs=512 seek=$((off / 512)) conv=notrunc status=none
}

cid_of()
{
	dd if="$1" bs=512 skip=1 count=20 status=none | tr -d '\0' | sed -n 's/^CID=//p'
}

qio()
{
	qemu-io -f vmdk -c "$2" "$1" >/dev/null || vd_die "qemu-io $2 $1"
}

# vd_bad_cases: builds every case in $W (and changes into it), fills CASES;
# cid/snap.vmdk is a CID-mismatched delta whose content is $VD_TMP/snap.raw.
vd_bad_cases()
{
	cd "$W" || vd_die "cd $W"
	# Good images the broken ones are made from.
	qemu-img create -q -f vmdk good.vmdk 8M
	qio good.vmdk "write -P 0x61 0 8M"
	mkdir -p chain && (cd chain && qemu-img create -q -f vmdk base.vmdk 8M &&
		qemu-img create -q -f vmdk -b base.vmdk -F vmdk snap.vmdk)
	qio chain/snap.vmdk "write -P 0x62 1M 64K"
	qemu-img convert -O raw chain/snap.vmdk "$VD_TMP/snap.raw" || vd_die "qemu-img convert"

	# "name|image|file the error must name|ERE (case-insensitive) for the problem"
	CASES=()

	head -c 300 good.vmdk >trunc.vmdk
	CASES+=("truncated KDMV header|trunc.vmdk|trunc.vmdk|trunc|short|EOF|too small|end of file")

	cp good.vmdk gtpast.vmdk
	gd=$(($(le64 gtpast.vmdk 56) * 512))
	rgd=$(($(le64 gtpast.vmdk 48) * 512))
	poke32 gtpast.vmdk "$gd" 4000000000
	poke32 gtpast.vmdk "$rgd" 4000000000
	CASES+=("GT offset past EOF|gtpast.vmdk|gtpast.vmdk|EOF|past|beyond|outside|end of file|truncat")

	mkdir -p noparent && cp chain/snap.vmdk noparent/
	CASES+=("missing parent|noparent/snap.vmdk|base.vmdk|not found|no such|missing|cannot open")

	mkdir -p cid && cp chain/base.vmdk chain/snap.vmdk cid/
	desc_edit cid/snap.vmdk 's/^parentCID=.*/parentCID=0badc0de/'
	CASES+=("CID mismatch|cid/snap.vmdk|snap.vmdk|CID|mismatch|modified")

	# Two deltas naming each other, with matching CIDs so only the loop is wrong.
	mkdir -p loop && cp chain/base.vmdk loop/ &&
		(cd loop && qemu-img create -q -f vmdk -b base.vmdk -F vmdk a.vmdk &&
			qemu-img create -q -f vmdk -b a.vmdk -F vmdk b.vmdk)
	desc_edit loop/a.vmdk "s/^parentFileNameHint=.*/parentFileNameHint=\"b.vmdk\"/; s/^parentCID=.*/parentCID=$(cid_of loop/b.vmdk)/"
	CASES+=("loop a <-> b|loop/b.vmdk|.vmdk|loop|cycle|itself")

	mkdir -p self && cp chain/snap.vmdk self/self.vmdk
	desc_edit self/self.vmdk "s/^parentFileNameHint=.*/parentFileNameHint=\"self.vmdk\"/; s/^parentCID=.*/parentCID=$(cid_of self/self.vmdk)/"
	CASES+=("delta naming itself as parent|self/self.vmdk|self.vmdk|loop|cycle|itself")

	# Errors about a parent say whose parent it is and how it was found; errors
	# about an extent, which disk it belongs to.
	mkdir -p badparent && cp chain/snap.vmdk badparent/ && head -c 300 chain/base.vmdk >badparent/base.vmdk
	CASES+=("truncated parent|badparent/snap.vmdk|badparent/base.vmdk|parent of .*badparent/snap.vmdk, found by parentFileNameHint")
	mkdir -p shortext && (cd shortext && qemu-img create -q -f vmdk -o subformat=monolithicFlat fb.vmdk 4M &&
		qemu-img create -q -f vmdk -b fb.vmdk -F vmdk fs.vmdk) && truncate -s 1M shortext/fb-flat.vmdk
	CASES+=("short flat extent of a parent|shortext/fs.vmdk|fb-flat.vmdk|extent 1 of .*shortext/fb.vmdk, in the parent of .*shortext/fs.vmdk, found by parentFileNameHint")

	mkdir -p noext && (cd noext && qemu-img create -q -f vmdk -o subformat=monolithicFlat fl.vmdk 4M) &&
		rm noext/fl-flat.vmdk
	CASES+=("missing extent file|noext/fl.vmdk|fl-flat.vmdk|not found|no such|missing|cannot open")

	mkdir -p badtype && (cd badtype && qemu-img create -q -f vmdk -o subformat=monolithicFlat bt.vmdk 4M) &&
		sed -i 's/^createType=.*/createType="holographicSparse"/' badtype/bt.vmdk
	CASES+=("unknown createType|badtype/bt.vmdk|bt.vmdk|createType|holographicSparse|unsupported|unknown")

	: >empty.vmdk
	CASES+=("empty file|empty.vmdk|empty.vmdk|empty|not a|unrecogni|too small|short")
	mkdir -p adir.vmdk
	CASES+=("directory|adir.vmdk|adir.vmdk|director|not a regular")
	CASES+=("/dev/null|/dev/null|/dev/null|not a|empty|device|too small")

	# ZERO extents adding up to 2^54 sectors: 2^63 bytes, one more than off_t holds.
	printf '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 18014398509481983 ZERO\nRW 1 ZERO\n' >huge.vmdk
	CASES+=("virtual size beyond off_t|huge.vmdk|huge.vmdk|off_t")

	head -c 1M /dev/urandom >garbage.vmdk
	CASES+=("random bytes|garbage.vmdk|garbage.vmdk|not a|unrecogni|unknown|invalid")
}
