// Command cowpod-vcsim is VMware's vSphere API simulator (govmomi's vcsim,
// Debian's 0.24) with what cowpod needs on top:
//
//   - InstantClone_Task, which 0.24 lacks, added with the simulator's extension
//     pattern (a type embedding *simulator.VirtualMachine). The child is made
//     powered on, with the spec's extraConfig, so its guest container starts
//     with the child's guestinfo (VMX_GUESTINFO_* env). --no-instant-clone
//     leaves it out: the call then faults MethodNotFound, as on vSphere < 6.7.
//   - A VM's pods die with it: in the simulator a VM's guest is a container on
//     this host's engine and its pods are sibling containers nested in its
//     cgroup (labelled cowpod.node=<vm>), which would outlive the VM; on
//     power-off and destroy they are removed, as they vanish inside a real VM.
//   - A template VM created at start (--template), carrying RUN.container
//     (--template-run) and a snapshot, so linked clones have a base.
//
// It listens on loopback only (--port), and on SIGTERM/SIGINT removes the
// guest containers of every VM it made (labelled with --instance).
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// instantCloneVM adds InstantClone_Task to a simulator VM. The simulator
// dispatches a SOAP call by reflection on the object registered under the
// moref, so registering this wrapper in place of the VM adds the method.
// The VM is embedded by value, not by pointer as in the simulator's example:
// the property collector and the inventory walks find a wrapper's managed
// object by descending into its first field, which must be a struct.
type instantCloneVM struct {
	simulator.VirtualMachine
}

// instantCloneBody is the SOAP body 0.24's methods package does not have.
type instantCloneBody struct {
	Req    *types.InstantClone_Task         `xml:"urn:vim25 InstantClone_Task,omitempty"`
	Res    *types.InstantClone_TaskResponse `xml:"InstantClone_TaskResponse,omitempty"`
	Fault_ *soap.Fault                      `xml:"http://schemas.xmlsoap.org/soap/envelope/ Fault,omitempty"`
}

func (b *instantCloneBody) Fault() *soap.Fault { return b.Fault_ }

// InstantCloneTask forks a powered-on child from a running parent. The
// simulator has no memory to share, so the child is a clone of the parent's
// configuration, powered on, with the spec's extraConfig (its identity).
func (vm *instantCloneVM) InstantCloneTask(ctx *simulator.Context, req *types.InstantClone_Task) soap.HasFault {
	task := simulator.CreateTask(vm, "instantClone", func(t *simulator.Task) (types.AnyType, types.BaseMethodFault) {
		if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
			return nil, &types.InvalidPowerState{
				RequestedState: types.VirtualMachinePowerStatePoweredOn,
				ExistingState:  vm.Runtime.PowerState,
			}
		}
		folder := req.Spec.Location.Folder
		if folder == nil {
			folder = vm.Parent
		}
		clone := &types.CloneVM_Task{
			This:   vm.Self,
			Folder: *folder,
			Name:   req.Spec.Name,
			Spec: types.VirtualMachineCloneSpec{
				Location: req.Spec.Location,
				Config:   &types.VirtualMachineConfigSpec{ExtraConfig: req.Spec.Config},
			},
		}
		res := vm.VirtualMachine.CloneVMTask(ctx, clone).(*methods.CloneVM_TaskBody)
		if res.Fault_ != nil {
			return nil, res.Fault_.VimFault().(types.BaseMethodFault)
		}
		ctask := simulator.Map.Get(res.Res.Returnval).(*simulator.Task)
		if ctask.Info.Error != nil {
			return nil, ctask.Info.Error.Fault
		}
		ref := ctask.Info.Result.(types.ManagedObjectReference)
		child, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine)
		if !ok {
			return nil, &types.ManagedObjectNotFound{Obj: ref}
		}
		on := child.PowerOnVMTask(ctx, &types.PowerOnVM_Task{This: ref}).(*methods.PowerOnVM_TaskBody)
		if on.Fault_ != nil {
			return nil, on.Fault_.VimFault().(types.BaseMethodFault)
		}
		if ptask := simulator.Map.Get(on.Res.Returnval).(*simulator.Task); ptask.Info.Error != nil {
			return nil, ptask.Info.Error.Fault
		}
		log.Printf("instant clone %s -> %s (%s)", vm.Name, req.Spec.Name, ref.Value)
		return ref, nil
	})
	return &instantCloneBody{Res: &types.InstantClone_TaskResponse{Returnval: task.Run()}}
}

// watcher is a registry handler: it adds InstantClone_Task to VMs as they
// power on (only a running VM can be a parent) and removes a VM's pods when
// it powers off or goes.
//
// Why on power-on rather than on creation: the simulator's own CloneVM_Task
// type-asserts the VM it just created (*simulator.VirtualMachine), and its
// snapshot code asserts the snapshotted VM the same way, so a VM is wrapped
// only once it runs. The wrapper takes a copy of the VM, made after the
// power-on applied (the registry applies a change before it calls handlers). A running parent therefore cannot be snapshotted here
// while instant clone is on; cowpod snapshots running parents only in the
// fallback, which runs with --no-instant-clone.
type watcher struct {
	self         types.ManagedObjectReference
	instantClone bool
	instance     string
}

func (w *watcher) Reference() types.ManagedObjectReference { return w.self }

func (w *watcher) PutObject(mo.Reference) {}

func (w *watcher) UpdateObject(obj mo.Reference, changes []types.PropertyChange) {
	ref := obj.Reference()
	if ref.Type != "VirtualMachine" {
		return
	}
	for _, c := range changes {
		if c.Name != "runtime.powerState" {
			continue
		}
		switch fmt.Sprint(c.Val) {
		case string(types.VirtualMachinePowerStatePoweredOn):
			if w.instantClone {
				if vm, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine); ok {
					simulator.Map.Put(&instantCloneVM{*vm})
				}
			}
		case string(types.VirtualMachinePowerStatePoweredOff):
			removePods(w.instance, entityName(ref))
		}
	}
}

func (w *watcher) RemoveObject(ref types.ManagedObjectReference) {
	if ref.Type == "VirtualMachine" {
		removePods(w.instance, entityName(ref))
	}
}

func entityName(ref types.ManagedObjectReference) string {
	if e, ok := simulator.Map.Get(ref).(mo.Entity); ok {
		return e.Entity().Name
	}
	return ""
}

// removePods removes the containers the cowpod agent of VM `name` started:
// those labelled cowpod.node=<name> that nest in (whose cgroup parent is) a
// guest container of that VM started by this simulator instance. Only those:
// another cluster on this engine may have a node of the same name.
func removePods(instance, name string) {
	if name == "" {
		return
	}
	guests := map[string]bool{}
	for _, line := range dockerLines("ps", "-a", "--no-trunc", "--filter", "label=cowpod.vcsim="+instance,
		"--format", "{{.ID}} {{.Names}}") {
		f := strings.Fields(line)
		if len(f) == 2 && strings.HasPrefix(f[1], "vcsim-"+name+"-") {
			guests[f[0]] = true
		}
	}
	if len(guests) == 0 {
		return
	}
	pods := dockerLines("ps", "-aq", "--no-trunc", "--filter", "label=cowpod.node="+name)
	if len(pods) == 0 {
		return
	}
	var ours []string
	args := append([]string{"inspect", "--format", "{{.Id}} {{.HostConfig.CgroupParent}}"}, pods...)
	for _, line := range dockerLines(args...) {
		f := strings.Fields(line)
		if len(f) == 2 && guests[f[1][strings.LastIndex(f[1], "/")+1:]] {
			ours = append(ours, f[0])
		}
	}
	if len(ours) == 0 {
		return
	}
	if err := exec.Command("docker", append([]string{"rm", "-f", "-v"}, ours...)...).Run(); err != nil {
		log.Printf("docker rm %v: %s", ours, err)
	}
}

func dockerLines(args ...string) []string {
	out, err := exec.Command("docker", args...).Output()
	if err != nil {
		log.Printf("docker %v: %s", args, err)
		return nil
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// sweep removes every guest container (and its pods and DMI volume) this
// simulator instance started.
func sweep(instance string) {
	out, _ := exec.Command("docker", "ps", "-a", "--filter", "label=cowpod.vcsim="+instance,
		"--format", "{{.Names}}").Output()
	for _, name := range strings.Fields(string(out)) {
		// Guest containers are named vcsim-<vm>-<uuid>; the DMI volume has the same name.
		_ = exec.Command("docker", "rm", "-f", "-v", name).Run()
		_ = exec.Command("docker", "volume", "rm", "-f", name).Run()
	}
}

func createTemplate(ctx context.Context, u *url.URL, dcName, folderName, name, run string) error {
	c, err := govmomi.NewClient(ctx, u, true)
	if err != nil {
		return err
	}
	defer func() { _ = c.Logout(ctx) }()
	finder := find.NewFinder(c.Client, false)
	dc, err := finder.Datacenter(ctx, dcName)
	if err != nil {
		return err
	}
	finder.SetDatacenter(dc)
	folders, err := dc.Folders(ctx)
	if err != nil {
		return err
	}
	folder, err := folders.VmFolder.CreateFolder(ctx, folderName)
	if err != nil {
		return err
	}
	pool, err := finder.ResourcePool(ctx, "DC0_C0/Resources")
	if err != nil {
		return err
	}
	ds, err := finder.DefaultDatastore(ctx)
	if err != nil {
		return err
	}
	// One NIC on "VM Network", as a real template has: clones keep it, or have
	// its backing moved to the network cowpod's settings name.
	network, err := finder.Network(ctx, "VM Network")
	if err != nil {
		return err
	}
	backing, err := network.EthernetCardBackingInfo(ctx)
	if err != nil {
		return err
	}
	nic, err := object.EthernetCardTypes().CreateEthernetCard("vmxnet3", backing)
	if err != nil {
		return err
	}
	spec := types.VirtualMachineConfigSpec{
		DeviceChange: []types.BaseVirtualDeviceConfigSpec{&types.VirtualDeviceConfigSpec{
			Operation: types.VirtualDeviceConfigSpecOperationAdd,
			Device:    nic,
		}},
		Name:     name,
		GuestId:  string(types.VirtualMachineGuestOsIdentifierDebian10_64Guest),
		NumCPUs:  2,
		MemoryMB: 2048,
		Files:    &types.VirtualMachineFileInfo{VmPathName: fmt.Sprintf("[%s]", ds.Name())},
	}
	if run != "" {
		spec.ExtraConfig = []types.BaseOptionValue{&types.OptionValue{Key: "RUN.container", Value: run}}
	}
	task, err := folder.CreateVM(ctx, spec, pool, nil)
	if err != nil {
		return err
	}
	info, err := task.WaitForResult(ctx, nil)
	if err != nil {
		return err
	}
	vm := object.NewVirtualMachine(c.Client, info.Result.(types.ManagedObjectReference))
	snap, err := vm.CreateSnapshot(ctx, "cowpod-base", "the base linked clones share", false, false)
	if err != nil {
		return err
	}
	return snap.Wait(ctx)
}

func main() {
	port := flag.Int("port", 8989, "loopback port to serve the SDK on")
	noInstantClone := flag.Bool("no-instant-clone", false, "leave InstantClone_Task out (vSphere < 6.7)")
	useTLS := flag.Bool("tls", true, "serve https with a self-signed certificate")
	template := flag.String("template", "cowpod-template", "name of the template VM to create (empty: none)")
	templateRun := flag.String("template-run", "", "the template's RUN.container extraConfig (JSON list of docker run args)")
	folderName := flag.String("folder", "cowpod", "VM folder (under the datacenter's vm folder) to create the template in")
	instance := flag.String("instance", "", "label value (cowpod.vcsim=) on guest containers, swept at exit")
	ready := flag.String("ready", "", "file to write the SDK URL to once the template exists")
	username := flag.String("username", "", "the only user name accepted (empty: any name and password, as vcsim)")
	passwordFile := flag.String("password-file", "", "file holding the only password accepted (with --username)")
	apiVersion := flag.String("api-version", "6.7", "vSphere API version to report (InstantClone_Task came with 6.7; "+
		"with 6.5 pyVmomi refuses the call itself)")
	flag.Parse()

	model := simulator.VPX()
	// pyVmomi negotiates the version from /sdk/vimServiceVersions.xml, which
	// reports About.ApiVersion: below 6.7 it refuses InstantClone before sending it.
	model.ServiceContent.About.ApiVersion = *apiVersion
	model.ServiceContent.About.Version = *apiVersion + ".0"
	model.Machine = 0 // no stock VMs: only what cowpod makes
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	model.Service.Listen = &url.URL{Host: fmt.Sprintf("127.0.0.1:%d", *port)}
	login := url.UserPassword("user", "pass")
	if *username != "" {
		pw, err := ioutil.ReadFile(*passwordFile)
		if err != nil {
			log.Fatal(err)
		}
		login = url.UserPassword(*username, strings.TrimSpace(string(pw)))
		model.Service.Listen.User = login
	}
	if *useTLS {
		model.Service.TLS = new(tls.Config)
	}
	w := &watcher{self: types.ManagedObjectReference{Type: "CowpodWatcher", Value: "cowpod-watcher"},
		instantClone: !*noInstantClone, instance: *instance}
	simulator.Map.AddHandler(w)

	s := model.Service.NewServer()
	u := *s.URL
	u.User = login

	if *template != "" {
		if err := createTemplate(context.Background(), &u, "DC0", *folderName, *template, *templateRun); err != nil {
			s.Close()
			model.Remove()
			log.Fatalf("creating template %s: %s", *template, err)
		}
	}
	log.Printf("serving 127.0.0.1:%d (instant clone: %v)", *port, !*noInstantClone)
	if *ready != "" {
		sdk := *s.URL
		sdk.User = nil
		if err := ioutil.WriteFile(*ready, []byte(sdk.String()+"\n"), 0o644); err != nil {
			log.Fatal(err)
		}
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	log.Printf("stopping")
	for _, e := range simulator.Map.All("VirtualMachine") {
		removePods(*instance, e.Entity().Name)
	}
	if *instance != "" {
		sweep(*instance)
	}
	s.Close()
	model.Remove()
}
