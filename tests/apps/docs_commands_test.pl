#!/usr/bin/perl
# Runs every `bnorm` command that README.md and docs/*.md quote, and checks what the docs
# say about it, so that the docs cannot drift from the tool:
#
#   perl tests/apps/docs_commands_test.pl BNORM_BINARY REPO_ROOT
#
# What counts as a quoted command, inside a fenced code block that is not Python:
#   - a line `$ bnorm ...` or `$ build/bnorm ...` (the lines after it, up to the next
#     `$ ` line or the end of the block, are its documented output);
#   - a line `build/bnorm ...` without a prompt (README.md, docs/experiment.md: commands
#     listed without output).
# A ```python block whose first line imports bnorm is a program: it runs with the Python
# module built beside the binary (BUILD/python) and must exit with status 0 (skipped, and
# said so, where the module is not built). Other Python blocks are fragments.
# Lines `bnorm COMMAND   # what it does` without a prompt are a list of the commands, not
# commands to run (docs/cli.md's first block); any other prompt-less `bnorm ...` line in a
# block is an error, so that no command escapes this test.
#
# Each file's commands run in document order in a fresh folder that holds build/bnorm and
# bin/bnorm (on PATH) for the binary under test, and links to the repository's examples/
# and tests/, so that the README's `build/bnorm ... examples/data/x.npy` runs as a
# newcomer runs it from the repository root, and a model trained by one command is there
# for the next.
#
# Checks, per command:
#   - the exit status: the one a trailing `# status N` comment names, else 0;
#   - the documented output: each of its lines must appear in the command's output
#     (stdout then stderr), in order. Runs of spaces count as one, numbers match any
#     number (they come from a real run and vary with the machine), and `...` matches
#     anything (text the docs leave out). A documented error line must therefore match
#     the tool's message word for word;
#   - long runs: a `bnorm experiment` of more than 2,000 steps (the default is 25,000) is
#     started, sent SIGINT once its first progress line shows that training runs, and
#     must stop as documented: status 130 and a one-line "interrupted" message. Every
#     other command must finish within 300 s.
use strict;
use warnings;
use Cwd qw(abs_path);

my ($binary, $repo) = @ARGV;
die "usage: docs_commands_test.pl BNORM_BINARY REPO_ROOT\n" unless defined $repo && -x $binary && -d $repo;
$binary = abs_path($binary);
$repo = abs_path($repo);
die "docs_commands_test.pl: quotes in the paths are not supported: $binary, $repo\n" if "$binary$repo" =~ /'/;

opendir(my $docs, "$repo/docs") or die "cannot list $repo/docs: $!\n";
my @files = ("$repo/README.md", map { "$repo/docs/$_" } sort grep { /\.md$/ } readdir($docs));
closedir($docs);
my $failures = 0;
my $commands = 0;

sub fail {
  my ($msg) = @_;
  print STDERR "FAIL: $msg\n";
  $failures++;
}

# The commands of one Markdown file: [line number, command, expected status, [output lines]].
sub commands_of {
  my ($path) = @_;
  open(my $fh, '<', $path) or die "cannot read $path: $!\n";
  my @out;
  my ($in_block, $runnable, $current, $python) = (0, 0, undef, undef);
  my $n = 0;
  while (my $line = <$fh>) {
    $n++;
    chomp $line;
    if ($line =~ /^\s*```(\S*)/) {
      if ($in_block) {
        ($in_block, $current, $python) = (0, undef, undef);
      } else {
        $in_block = 1;
        $runnable = $1 !~ /^(python|cpp|c\+\+|json|cmake)$/;
        if ($1 eq 'python') {  # a program when it starts by importing bnorm
          my $first = <$fh>;
          $n++;
          chomp $first;
          if ($first =~ /^(?:import\s.*\bbnorm\b|from bnorm\b)/) {
            $python = [$n, 'python3 (the block below)', 'python', [$first]];
            push @out, $python;
          }
        }
      }
      next;
    }
    if (defined $python) {
      push @{$python->[3]}, $line;
      next;
    }
    next unless $in_block && $runnable;
    if ($line =~ /^\$ ((?:build\/)?bnorm(?:\s.*)?)$/ || $line =~ /^(build\/bnorm\s.*)$/) {
      my $text = $1;
      my $status = 0;
      $status = $1 if $text =~ /#\s*status\s+(\d+)/;
      $text =~ s/\s+#.*$//;  # the trailing comment
      $current = [$n, $text, $status, []];
      push @out, $current;
      $current = undef unless $line =~ /^\$ /;  # prompt-less commands have no output
    } elsif ($line =~ /^bnorm\s/ && $line !~ /^bnorm(?: [a-z]+)?: /) {  # not a message
      # The list of commands (`bnorm NAME   # what it does`) is no command to run; any
      # other prompt-less bnorm line would escape this test.
      push @out, [$n, $line, 'unprompted', []] unless $line =~ /^bnorm [a-z]+\s+#/;
      $current = undef;
    } elsif ($line =~ /^\$ /) {
      $current = undef;  # another program's command (make, python3, ...): not ours
    } elsif (defined $current) {
      push @{$current->[3]}, $line;
    }
  }
  return @out;
}

sub normalize {
  my ($s) = @_;
  $s =~ s/\s+/ /g;
  $s =~ s/^ | $//g;
  return $s;
}

# A documented output line as a regular expression over one normalized output line.
sub pattern_of {
  my ($doc) = @_;
  my @pieces = split(/\.\.\./, normalize($doc), -1);
  my $number = '[-+~]?(?:[0-9][0-9,]*(?:\.[0-9]*)?|\.[0-9]+)(?:e[-+]?[0-9]+)?';
  for my $piece (@pieces) {
    my @parts = split(/([-+~]?(?:[0-9][0-9,]*(?:\.[0-9]*)?|\.[0-9]+)(?:e[-+]?[0-9]+)?)/, $piece, -1);
    my $re = '';
    for my $i (0 .. $#parts) {
      $re .= ($i % 2) ? $number : quotemeta($parts[$i]);
    }
    $piece = $re;
  }
  return join('.*', @pieces);
}

sub slurp {
  my ($path) = @_;
  open(my $fh, '<', $path) or return '';
  local $/;
  my $s = <$fh>;
  return defined $s ? $s : '';
}

for my $file (@files) {
  my @cmds = commands_of($file);
  next unless @cmds;
  (my $name = $file) =~ s/^\Q$repo\E\///;
  my $work = `mktemp -d "\${TMPDIR:-/tmp}/bnorm_docs.XXXXXX"`;
  chomp $work;
  mkdir "$work/build";
  mkdir "$work/bin";
  symlink($binary, "$work/build/bnorm") or die "symlink: $!\n";
  symlink($binary, "$work/bin/bnorm") or die "symlink: $!\n";
  symlink("$repo/examples", "$work/examples") or die "symlink: $!\n";
  symlink("$repo/tests", "$work/tests") or die "symlink: $!\n";
  local $ENV{PATH} = "$work/bin:$ENV{PATH}";
  local $ENV{COLUMNS} = 120;
  for my $c (@cmds) {
    my ($line, $cmd, $want_status, $doc) = @$c;
    $commands++;
    my $where = "$name:$line: $cmd";
    if ($want_status eq 'python') {
      # A Python program: run with the module built beside the binary (build/python).
      (my $module = $binary) =~ s{/[^/]+$}{/python};
      if (!-d "$module/bnorm" || !-x '/usr/bin/python3') {
        print "skip: $where (the Python module is not built: no pybind11)\n";
        next;
      }
      open(my $py, '>', "$work/.block.py") or die "cannot write $work/.block.py: $!\n";
      print $py join("\n", @$doc), "\n";
      close($py);
      system("cd '$work' && PYTHONPATH='$module' PYTHONDONTWRITEBYTECODE=1 timeout -k 30 300 /usr/bin/python3 .block.py >'$work/.out' 2>'$work/.err'");
      my $status = $? & 127 ? 128 + ($? & 127) : $? >> 8;
      if ($status != 0) {
        fail("$where: exit status $status\n" . join("\n", @$doc) . "\n--- stdout\n" . slurp("$work/.out") . "--- stderr\n" . slurp("$work/.err"));
      } else {
        print "ok: $where -> status 0\n";
      }
      next;
    }
    if ($want_status eq 'unprompted') {
      fail("$where: a bnorm command without the `\$ ` prompt is not run by this test: write it as `\$ $cmd`");
      next;
    }
    my $long = 0;
    if ($cmd =~ /\bbnorm experiment\b/ && $cmd !~ /--help/) {
      my ($steps) = $cmd =~ /--steps[ =](\d+)/;
      $long = !defined $steps || $steps > 2000;
    }
    my $q = $cmd;
    $q =~ s/'/'\\''/g;
    my ($status, $out, $err);
    if ($long) {
      # Started in the background; once its first progress line shows that training
      # runs (within 120 s), SIGINT, as a Ctrl-C would.
      my $pid = fork();
      die "fork: $!\n" unless defined $pid;
      if ($pid == 0) {
        chdir $work or exit 127;
        open(STDOUT, '>', "$work/.out") or exit 127;
        open(STDERR, '>', "$work/.err") or exit 127;
        $SIG{INT} = 'DEFAULT';
        exec('bash', '-c', "exec $cmd") or exit 127;
      }
      my ($started, $ended) = (0, 0);
      for (my $t = 0; $t < 600 && !$started && !$ended; $t++) {
        select(undef, undef, undef, 0.2);
        $started = slurp("$work/.out") =~ /\bstep\s+\d+\/\d+/;
        $ended = waitpid($pid, 1) == $pid;  # WNOHANG: ended by itself ($? is its status)
      }
      if (!$ended) {
        kill('INT', $pid);
        # It must stop at its next step: 60 s at most, then it is killed.
        for (my $t = 0; $t < 300 && !$ended; $t++) {
          select(undef, undef, undef, 0.2);
          $ended = waitpid($pid, 1) == $pid;
        }
        if (!$ended) {
          kill('KILL', $pid);
          waitpid($pid, 0);
        }
      }
      $status = $? & 127 ? 128 + ($? & 127) : $? >> 8;
      $out = slurp("$work/.out");
      $err = slurp("$work/.err");
      if (!$started || $status != 130 || $err !~ /interrupted/) {
        fail("$where: a long run: expected it to start training, then stop on SIGINT with status 130 and an 'interrupted' message; "
             . ($started ? "" : "no progress line within 120 s; ") . "status $status\n--- stdout\n$out--- stderr\n$err");
      } else {
        print "ok: $where -> started training, stopped on SIGINT as documented (status 130)\n";
      }
      next;
    }
    # Every other command must finish within 300 s (-k: killed if it ignores the SIGINT).
    system("cd '$work' && timeout -s INT -k 30 300 bash -c '$q' >'$work/.out' 2>'$work/.err'");
    $status = $? == -1 ? -1 : ($? & 127 ? 128 + ($? & 127) : $? >> 8);
    $out = slurp("$work/.out");
    $err = slurp("$work/.err");
    if ($status != $want_status) {
      fail("$where: exit status $status, the docs say $want_status\n--- stdout\n$out--- stderr\n$err");
      next;
    }
    my @actual = map { normalize($_) } split(/\n/, $out . ($out =~ /\n$/ || $out eq '' ? '' : "\n") . $err);
    my $next = 0;
    my $bad = 0;
    for my $d (@$doc) {
      next if normalize($d) eq '' || normalize($d) eq '...';
      my $re = pattern_of($d);
      my $found = 0;
      while ($next < @actual) {
        if ($actual[$next++] =~ /$re/) {
          $found = 1;
          last;
        }
      }
      if (!$found) {
        fail("$where: the documented line\n    $d\n  is not in the output (in order):\n--- stdout\n$out--- stderr\n$err");
        $bad = 1;
        last;
      }
    }
    print "ok: $where -> status $status" . (@$doc ? ", output as documented" : "") . "\n" unless $bad;
  }
  system("rm -rf '$work'");
}

if ($commands == 0) {
  fail("no commands found in README.md and docs/*.md: the extraction rules are broken");
}
if ($failures) {
  print STDERR "docs_commands: $failures of $commands commands do not do what the docs say\n";
  exit 1;
}
print "docs_commands: $commands commands run as documented\n";
exit 0;
