#!/bin/sh
# A one-node OpenStack nova (Debian 12's Zed packages) in the booted container, as an operator brings one up:
# MariaDB and RabbitMQ, keystone, glance (a file store), placement, nova's API, conductor, scheduler and compute
# (libvirt driver, virt_type qemu). No neutron: servers are made with --nic none (compute API 2.37).
# Everything listens on the container's own loopback (it runs with a private network). Prints "nova ready" last.
set -eu
PW=secret
HOST=$(hostname)
echo "127.0.0.1 $HOST" >> /etc/hosts
ini() { crudini --set "$@"; }

echo "NODENAME=rabbit@localhost" > /etc/rabbitmq/rabbitmq-env.conf
systemctl start mariadb rabbitmq-server
rabbitmqctl -q add_user openstack "$PW" >/dev/null
rabbitmqctl -q set_permissions openstack ".*" ".*" ".*" >/dev/null
mysql <<SQL
CREATE DATABASE keystone; CREATE DATABASE glance; CREATE DATABASE placement;
CREATE DATABASE nova_api; CREATE DATABASE nova; CREATE DATABASE nova_cell0;
CREATE USER 'os'@'localhost' IDENTIFIED BY '$PW';
GRANT ALL PRIVILEGES ON *.* TO 'os'@'localhost';
SQL
db() { echo "mysql+pymysql://os:$PW@localhost/$1"; }
authtoken() {  # $1 the file, $2 the service's user
  ini "$1" keystone_authtoken www_authenticate_uri http://localhost:5000
  ini "$1" keystone_authtoken auth_url http://localhost:5000
  ini "$1" keystone_authtoken auth_type password
  ini "$1" keystone_authtoken project_domain_name Default
  ini "$1" keystone_authtoken user_domain_name Default
  ini "$1" keystone_authtoken project_name service
  ini "$1" keystone_authtoken username "$2"
  ini "$1" keystone_authtoken password "$PW"
  ini "$1" keystone_authtoken region_name RegionOne
}

# keystone
ini /etc/keystone/keystone.conf database connection "$(db keystone)"
ini /etc/keystone/keystone.conf token provider fernet
su -s /bin/sh -c "keystone-manage db_sync" keystone
keystone-manage fernet_setup --keystone-user keystone --keystone-group keystone
keystone-manage credential_setup --keystone-user keystone --keystone-group keystone
keystone-manage bootstrap --bootstrap-password "$PW" --bootstrap-admin-url http://localhost:5000/v3/ \
  --bootstrap-internal-url http://localhost:5000/v3/ --bootstrap-public-url http://localhost:5000/v3/ \
  --bootstrap-region-id RegionOne
systemctl start keystone
cat > /root/admin.env <<ENV
OS_AUTH_URL=http://localhost:5000/v3
OS_USERNAME=admin
OS_PASSWORD=$PW
OS_PROJECT_NAME=admin
OS_USER_DOMAIN_NAME=Default
OS_PROJECT_DOMAIN_NAME=Default
OS_IDENTITY_API_VERSION=3
OS_REGION_NAME=RegionOne
ENV
set -a; . /root/admin.env; set +a
for i in $(seq 60); do openstack token issue >/dev/null 2>&1 && break; sleep 1; done
openstack project create --domain default service -f value -c id >/dev/null
for svc in glance placement nova; do
  openstack user create --domain default --password "$PW" "$svc" -f value -c id >/dev/null
  openstack role add --project service --user "$svc" admin
done
openstack service create --name glance image -f value -c id >/dev/null
openstack service create --name placement placement -f value -c id >/dev/null
openstack service create --name nova compute -f value -c id >/dev/null
for iface in public internal admin; do
  openstack endpoint create --region RegionOne image "$iface" http://localhost:9292 >/dev/null
  openstack endpoint create --region RegionOne placement "$iface" http://localhost:8778 >/dev/null
  openstack endpoint create --region RegionOne compute "$iface" http://localhost:8774/v2.1 >/dev/null
done

# glance: images in files
G=/etc/glance/glance-api.conf
ini $G database connection "$(db glance)"
authtoken $G glance
ini $G paste_deploy flavor keystone
ini $G DEFAULT enabled_backends "file:file"
ini $G glance_store default_backend file
ini $G file filesystem_store_datadir /var/lib/glance/images/
su -s /bin/sh -c "glance-manage db_sync" glance
systemctl start glance-api

# placement
P=/etc/placement/placement.conf
ini $P placement_database connection "$(db placement)"
ini $P api auth_strategy keystone
authtoken $P placement
su -s /bin/sh -c "placement-manage db sync" placement
systemctl start placement-api

# nova, and the libvirt it drives (inside a container: no cgroups, namespaces or labels of its own)
N=/etc/nova/nova.conf
ini $N DEFAULT transport_url "rabbit://openstack:$PW@localhost:5672/"
ini $N DEFAULT my_ip 127.0.0.1
ini $N DEFAULT host "$HOST"
ini $N api_database connection "$(db nova_api)"
ini $N database connection "$(db nova)"
ini $N api auth_strategy keystone
authtoken $N nova
ini $N service_user send_service_user_token true
ini $N service_user auth_url http://localhost:5000
ini $N service_user auth_type password
ini $N service_user project_domain_name Default
ini $N service_user user_domain_name Default
ini $N service_user project_name service
ini $N service_user username nova
ini $N service_user password "$PW"
ini $N glance api_servers http://localhost:9292
for key in auth_url:http://localhost:5000/v3 auth_type:password project_domain_name:Default \
  user_domain_name:Default project_name:service username:placement password:$PW region_name:RegionOne; do
  ini $N placement "${key%%:*}" "${key#*:}"
done
ini $N vnc enabled false
ini $N oslo_concurrency lock_path /var/lib/nova/tmp
ini $N scheduler discover_hosts_in_cells_interval 5
ini $N libvirt virt_type qemu
ini $N libvirt cpu_mode none
cat >> /etc/libvirt/qemu.conf <<QEMU
cgroup_controllers = [ ]
namespaces = [ ]
security_driver = "none"
QEMU
systemctl restart libvirtd
su -s /bin/sh -c "nova-manage api_db sync" nova
su -s /bin/sh -c "nova-manage cell_v2 map_cell0" nova
su -s /bin/sh -c "nova-manage cell_v2 create_cell --name=cell1" nova >/dev/null
su -s /bin/sh -c "nova-manage db sync" nova
systemctl start nova-api nova-conductor nova-scheduler nova-compute
for i in $(seq 120); do
  openstack compute service list --service nova-compute -f value -c State 2>/dev/null | grep -q up && break
  sleep 1
done
su -s /bin/sh -c "nova-manage cell_v2 discover_hosts" nova >/dev/null
openstack flavor create --ram 64 --disk 1 --vcpus 1 tiny -f value -c id >/dev/null
truncate -s 1M /root/tiny.raw
openstack image create --disk-format raw --container-format bare --file /root/tiny.raw tiny -f value -c id >/dev/null
echo "nova ready"
