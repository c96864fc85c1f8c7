"""What runs inside a cvm confidential VM (the guest agent, its /init) and the host-side
build of the direct-boot image that carries them, assembled from Debian packages."""
