# Sourced by nginx's configure after objs/Makefile is written: adds the rule
# that builds the Rust library with cargo. The rule always runs cargo (which
# knows what changed); the library is a link dependency of nginx (LINK_DEPS),
# so nginx is relinked when it changes.

ngx_python_objs=`cd $NGX_OBJS && pwd`
ngx_python_src=`pwd`

cat << END >> $NGX_MAKEFILE

$ngx_python_lib: ngx_python_force
	cd $ngx_python_dir && NGX_OBJS=$ngx_python_objs NGX_SRC=$ngx_python_src \\
	NGX_PYTHON_STREAM=$ngx_python_stream \\
	PYO3_PYTHON=$PYO3_PYTHON cargo build --release --lib \\
	--target-dir=$ngx_python_target --features="$NGX_PYTHON_FEATURES"

ngx_python_force:
END
