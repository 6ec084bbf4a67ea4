"""What ``--help`` says of each verb of a command group, and the examples commands show.

Kept apart from the modules that register the verbs: the parsers say what a command accepts,
this says what it is for. ``main`` fills these in after building a parser (a module's own
``help=`` wins); tests/unit/test_cli_table.py checks that every command has a description
and that every entry here names a command that exists.
"""

from __future__ import annotations

# "<command> <verb>" -> its line in the group's --help (and its description)
VERBS: dict[str, str] = {
    "alias add": "add a command alias",
    "alias list": "list your command aliases",
    "alias rename": "rename a command alias",
    "alias remove": "remove a command alias",
    "cluster list": "list cluster members (refused: a root is never clustered)",
    "operation list": "list background operations (always empty: lxdlib runs none)",
    "operation show": "show a background operation",
    "operation delete": "cancel a background operation",
    "project list": "list the projects (the default project)",
    "project show": "print a project as YAML",
    "project get": "print a project's config key",
    "project switch": "make a project the current one (only default)",
    "project get-current": "print the current project",
    "project info": "show what the instances' limits, disks and the networks take",
    "warning list": "list the warnings (always empty)",
    "warning show": "show a warning",
    "warning acknowledge": "acknowledge a warning",
    "warning delete": "delete a warning",
    "config set": "set instance keys (or host keys, without an instance)",
    "config unset": "remove instance keys (or host keys, without an instance)",
    "config get": "print the value of an instance key (or a host key)",
    "config show": "print an instance's configuration as YAML (--expanded: with its profiles)",
    "config edit": "edit an instance's configuration as YAML (stdin when not a terminal)",
    "config trust": "list the client certificates the server trusts (none: no network API)",
    "config device": "add, remove, list, show, set, unset, get or override instance devices",
    "config metadata": "show or edit the image metadata an instance keeps (its templates' list)",
    "config template": "list, show, create, edit or delete the templates its starts render",
    "image delete": "delete images",
    "image info": "show an image's properties, aliases and sizes",
    "image show": "print an image's record as YAML",
    "image edit": "edit an image's properties as YAML (stdin when not a terminal)",
    "image get-property": "print one property of an image",
    "image set-property": "set one property of an image",
    "image unset-property": "remove one property of an image",
    "image export": "write an image's tarballs to files",
    "image alias": "create, delete, rename or list image aliases",
    "storage volume": "manage custom storage volumes",
    "storage volume create": "create a custom volume in a pool",
    "storage volume list": "list a pool's custom volumes",
    "storage volume show": "print a custom volume or one of its snapshots as YAML",
    "storage volume edit": "edit a custom volume's config and description, or a snapshot's "
                           "description and expiry, as YAML",
    "storage volume delete": "delete a custom volume (and its snapshots) or one snapshot",
    "storage volume attach": "attach a custom volume to an instance as a disk",
    "storage volume detach": "detach a custom volume from an instance",
    "storage volume attach-profile": "attach a custom volume to a profile as a disk",
    "storage volume detach-profile": "detach a custom volume from a profile",
    "storage volume set": "set keys of a custom volume",
    "storage volume unset": "remove a key of a custom volume",
    "storage volume get": "print a key of a custom volume",
    "storage volume rename": "rename a custom volume nothing uses, or a snapshot (<vol>/<snap> "
                             "<vol>/<new>)",
    "storage volume copy": "copy a custom volume, within a pool or to another",
    "storage volume info": "show a custom volume's type, usage, size limit and snapshots",
    "storage volume snapshot": "take a read-only snapshot of a custom volume",
    "storage volume restore": "put a custom volume's files back as a snapshot holds them",
    "storage create": "create a storage pool (btrfs, zfs or dir)",
    "storage list": "list the storage pools",
    "storage show": "print a storage pool as YAML",
    "storage info": "show a storage pool's usage",
    "storage delete": "delete an unused storage pool",
    "storage get": "print a key of a storage pool",
    "storage set": "set keys of a storage pool (size grows a loop-file btrfs pool)",
    "storage unset": "remove a key of a storage pool",
    "profile list": "list the profiles and how many instances use each",
    "profile show": "print a profile as YAML, with the instances using it",
    "profile edit": "edit a profile as YAML (stdin when not a terminal)",
    "profile create": "create an empty profile",
    "profile copy": "copy a profile under a new name",
    "profile delete": "delete profiles no instance uses",
    "profile rename": "rename a profile",
    "profile set": "set keys of a profile (applied to the instances using it)",
    "profile unset": "remove a key of a profile",
    "profile get": "print a key of a profile",
    "profile add": "add a profile to an instance's list",
    "profile remove": "remove a profile from an instance's list",
    "profile assign": "replace an instance's profiles (comma-separated; empty for none)",
    "profile device": "add, remove, list, show, set, unset or get profile devices",
    "network create": "create a managed bridge (with DHCP and NAT)",
    "network list": "list the managed networks",
    "network show": "print a network as YAML, with what uses it",
    "network info": "show a network's interface state and addresses",
    "network delete": "delete a network no instance or profile uses",
    "network edit": "edit a network's configuration as YAML (stdin when not a terminal)",
    "network list-leases": "list the DHCP leases a network handed out",
    "network set": "set keys of a network",
    "network unset": "remove a key of a network",
    "network get": "print a key of a network",
    "network rename": "rename a network no instance or profile uses",
    "network attach": "give an instance a NIC on a network",
    "network detach": "remove an instance's NIC on a network",
    "network attach-profile": "give a profile a NIC on a network",
    "network detach-profile": "remove a profile's NIC on a network",
    "remote show": "print a remote's settings as YAML",
    "remote list": "list the image servers",
    "remote remove": "remove an image server",
    "remote rename": "rename an image server",
    "remote set-url": "point a remote at another URL (a mirror)",
    "remote get-default": "print the default remote",
    "remote switch": "make a remote the default",
}

# "<command path>" -> its usage line, where argparse's (built from the argument names) does
# not say what the words are
USAGE: dict[str, str] = {
    "init": "%(prog)s [<image>] [<instance>] [options] | --auto | --minimal | --preseed",
    "launch": "%(prog)s <image> [<instance>] [-p <profile>]… [-c <key>=<value>]… "
              "[-d <device>,<key>=<value>]… [-s <pool>] [-e]",
    "copy": "%(prog)s <instance>[/<snapshot>] [<new instance>] [options]",
    "move": "%(prog)s <instance>[/<snapshot>] [<new name>] [-s <pool>]",
    "snapshot": "%(prog)s <instance> [<snapshot>] [--stateful] [--reuse] [--no-expiry]",
    "restore": "%(prog)s <instance> <snapshot> [--stateful]",
    "list": "%(prog)s [<filter>…] [--fast] [-c <columns>] [-f <format>]",
    "config set": "%(prog)s [<instance>] <key> <value> | [<instance>] <key>=<value>…",
    "config unset": "%(prog)s [<instance>] <key>",
    "config get": "%(prog)s [<instance>] <key> [-e]",
    "config device": "%(prog)s add|remove|list|show|set|unset|get|override <instance> "
                     "[<device>] [<type>|<key>] [<key>=<value>…]",
    "profile set": "%(prog)s <profile> <key> <value> | <profile> <key>=<value>…",
    "profile device": "%(prog)s add|remove|list|show|set|unset|get <profile> [<device>] "
                      "[<type>|<key>] [<key>=<value>…]",
    "network set": "%(prog)s <network> <key> <value> | <network> <key>=<value>…",
    "network attach-profile": "%(prog)s <network> <profile> [<device name>] "
                              "[<interface name>]",
    "network detach-profile": "%(prog)s <network> <profile> [<device name>]",
    "image alias": "%(prog)s create|delete|rename|list [<alias>] [<fingerprint>|<new name>]",
    "storage volume attach-profile": "%(prog)s <pool> <volume> <profile> [<device name>] "
                                     "<path>",
    "storage volume detach-profile": "%(prog)s <pool> <volume> <profile> [<device name>]",
    "storage set": "%(prog)s <pool> <key> <value> | <pool> <key>=<value>…",
    "storage volume set": "%(prog)s <pool> <volume> <key> <value> | <pool> <volume> "
                          "<key>=<value>…",
    "storage volume rename": "%(prog)s <pool> <old name> <new name>",
    "storage volume copy": "%(prog)s <pool>/<volume> <pool>/<volume> [--volume-only]",
    "storage volume info": "%(prog)s <pool> <volume>",
    "storage volume snapshot": "%(prog)s <pool> <volume> [<snapshot>] [--reuse]",
    "storage volume restore": "%(prog)s <pool> <volume> <snapshot>",
    "storage volume delete": "%(prog)s <pool> <volume>[/<snapshot>]",
    "storage volume show": "%(prog)s <pool> <volume>[/<snapshot>]",
}

# "<command path>" -> examples shown at the end of its --help
EXAMPLES: dict[str, str] = {
    "init": """
  lxdlib init --auto                       # this host: a btrfs pool, lxdbr0, default profile
  lxdlib init busybox c1                   # an instance, not started
  lxdlib init --preseed < preseed.yaml     # the host, as LXD's preseed describes it
""",
    "launch": """
  lxdlib launch busybox c1
  lxdlib launch images:alpine/3.19 web -c limits.memory=256MiB -p default -p small
  lxdlib launch busybox c2 -d root,size=1GiB --ephemeral
""",
    "exec": """
  lxdlib exec c1 -- sh -c 'echo hi'        # everything after -- is the command
  lxdlib exec c1 --env FOO=bar --cwd /tmp -- env
  lxdlib exec c1 sh                        # a terminal: an interactive shell
""",
    "list": """
  lxdlib list                              # name, state, IPv4, IPv6, type, snapshots
  lxdlib list --fast                       # no addresses: name, state, architecture, …
  lxdlib list web -c ns4 --format csv      # instances whose name starts with web
  lxdlib list --format json
""",
    "info": """
  lxdlib info c1
  lxdlib info c1 --show-log
  lxdlib info                              # the host
""",
    "config": """
  lxdlib config set c1 limits.memory 256MiB
  lxdlib config get c1 limits.memory
  lxdlib config show c1 --expanded
  lxdlib config device add c1 http proxy listen=tcp:0.0.0.0:80 connect=tcp:127.0.0.1:80
  lxdlib config set images.remote_cache_expiry 5   # a host key
""",
    "config set": """
  lxdlib config set c1 limits.cpu 2
  lxdlib config set c1 limits.memory=256MiB limits.cpu=1
""",
    "config device": """
  lxdlib config device add c1 data disk source=/srv/data path=/data
  lxdlib config device override c1 root size=2GiB
  lxdlib config device list c1
""",
    "snapshot": """
  lxdlib snapshot c1                       # snap0, snap1, … (or snapshots.pattern)
  lxdlib snapshot c1 before-upgrade
  lxdlib restore c1 before-upgrade
""",
    "restore": """
  lxdlib restore c1 snap0
""",
    "copy": """
  lxdlib copy c1 c2
  lxdlib copy c1/snap0 c3 --instance-only
""",
    "delete": """
  lxdlib delete c1 --force                 # stops it first
  lxdlib delete c1/snap0
""",
    "file": """
  lxdlib file push ./app.conf c1/etc/app.conf
  lxdlib file pull c1/etc/hosts -          # to standard output
  lxdlib file push -r ./site c1/srv/
""",
    "file push": """
  lxdlib file push ./app.conf c1/etc/app.conf --uid 0 --mode 0644
  lxdlib file push -r -p ./site c1/srv/www/
""",
    "file pull": """
  lxdlib file pull c1/etc/hosts .
  lxdlib file pull -r c1/var/log ./logs
""",
    "image": """
  lxdlib image build busybox --alias busybox
  lxdlib image copy images:alpine/3.19 local: --alias alpine
  lxdlib image list
  lxdlib image import ./image.tar.xz --alias mine
  lxdlib image alias create old-alpine <fingerprint>
""",
    "image list": """
  lxdlib image list
  lxdlib image list images: alpine
""",
    "image build": """
  lxdlib image build busybox --alias busybox
  lxdlib image build debian --alias bookworm --packages docker.io
""",
    "publish": """
  lxdlib publish c1 --alias web-base
  lxdlib publish c1/snap0 --alias web-base-0
""",
    "profile": """
  lxdlib profile create small
  lxdlib profile set small limits.memory 64MiB
  lxdlib profile add c1 small
  lxdlib profile show small
  lxdlib profile show small | lxdlib profile edit other
""",
    "network": """
  lxdlib network create br1 ipv4.address=10.10.0.1/24 ipv4.nat=true
  lxdlib network attach br1 c1 eth1
  lxdlib network attach-profile br1 default eth1   # every instance of the profile
  lxdlib network list-leases br1
""",
    "network attach-profile": """
  lxdlib network attach-profile br1 default          # device br1, nictype bridged
  lxdlib network attach-profile br1 web eth1 eth1    # device eth1, interface eth1
""",
    "storage": """
  lxdlib storage create fast btrfs size=10GiB
  lxdlib storage list
  lxdlib storage set fast size 20GiB          # a loop-file btrfs pool grows
  lxdlib storage volume create fast data size=1GiB
  lxdlib storage volume attach fast data c1 /data
""",
    "storage set": """
  lxdlib storage set default size 10GiB                    # grow the loop file and btrfs
  lxdlib storage set default btrfs.mount_options=user_subvol_rm_allowed,compress=zstd
""",
    "storage volume": """
  lxdlib storage volume create default data size=1GiB
  lxdlib storage volume attach default data c1 /data
  lxdlib storage volume attach-profile default data web /data   # every instance of web
""",
    "storage volume attach-profile": """
  lxdlib storage volume attach-profile default data web /data        # device data
  lxdlib storage volume attach-profile default data web shared /srv  # device shared
""",
    "storage volume rename": """
  lxdlib storage volume rename default data archive
""",
    "storage volume copy": """
  lxdlib storage volume copy default/data default/data-copy   # a clone within the pool
  lxdlib storage volume copy default/data fast/data           # a file copy to another pool
""",
    "storage volume info": """
  lxdlib storage volume info default data
""",
    "storage volume snapshot": """
  lxdlib storage volume snapshot default data            # snap0, snap1, …
  lxdlib storage volume snapshot default data before-upgrade
""",
    "storage volume restore": """
  lxdlib storage volume restore default data before-upgrade
  lxdlib storage volume delete default data/before-upgrade
""",
    "remote": """
  lxdlib remote list
  lxdlib remote add mirror https://images.example.org
  lxdlib remote set-url images http://mirror.local/images
""",
    "export": """
  lxdlib export c1 c1.tar.gz
  lxdlib export c1 --instance-only --compression zstd
""",
    "import": """
  lxdlib import c1.tar.gz
  lxdlib import c1.tar.gz c1-restored -s fast
""",
    "completion": """
  source <(lxdlib completion bash)
  lxdlib completion zsh > "${fpath[1]}/_lxdlib"
""",
}
